"""Backends own runner lifecycles: the embedded local one and (later) Nomad."""
