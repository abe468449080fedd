"""The durable queue behind the router's /queue/ routes."""
