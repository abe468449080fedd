"""The server's admin side: deployed apps kept on disk, and the HTTP API that deploys them."""
