"""HTTP doubles of Consul and Nomad for yurt's tests, stricter than the real servers."""

from .consul import ConsulDouble
from .nomad import NomadDouble
from .validate import problems

__all__ = ["ConsulDouble", "NomadDouble", "problems"]
