"""Runners as Nomad allocations: the job body (pure), the API adapter, and the backend."""
