"""Discovery: which runners are healthy (the local registry; Consul later)."""
