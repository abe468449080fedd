"""Names (and Nomad's unit of time) shared by the job body, the backend and Consul discovery.
Pure."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# The runner writes FAILURE_MARK (parse_failure reads it) and reads TOKEN_ENV: named once, in
# the contract both sides import.
from yurt.runner.contract import FAILURE_MARK, parse_failure
from yurt.runner.contract import PAYLOAD_TOKEN_ENV as TOKEN_ENV

__all__ = [
    "FAILURE_MARK",
    "GROUP",
    "PORT_LABEL",
    "SURGE_SUFFIX",
    "TASK",
    "TOKEN_ENV",
    "PayloadRef",
    "base_job",
    "job_id",
    "ns",
    "parse_failure",
    "runner_id_from_service_id",
]

GROUP = "runner"  # the one task group of an app's job
TASK = "runner"  # its one task
PORT_LABEL = "http"  # the runner's dynamic port
NS_PER_S = 1_000_000_000

_INVALID = re.compile(r"[^a-z0-9-]+")
# Nomad registers a group service in Consul as _nomad-task-<allocID>-group-<group>-<name>-<port>.
_NOMAD_SERVICE_ID = re.compile(
    r"^_nomad-task-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-"
)
_MAX = 63  # a DNS label: Nomad checks service names against RFC 1123


# A surge job's id is its app's job id with this suffix (surge.py).
SURGE_SUFFIX = "-surge"


def base_job(job: str) -> str:
    """The app's job id of ``job``, a surge job's included: what a runner token is made for."""
    return job.removesuffix(SURGE_SUFFIX)


def job_id(prefix: str, app_id: str) -> str:
    """``<prefix>-<owner>-<app>``: the job's ID and its Consul service name.

    Service names must be DNS labels (lowercase letters, digits, dashes, at most 63), so any
    other character becomes a dash; a name that changed on the way, or had to be cut, gets a
    short digest of the app id so that two apps never share a name.
    """
    raw = f"{prefix}-{app_id.replace('/', '-')}"
    name = _INVALID.sub("-", raw.lower()).strip("-")
    if name == raw and len(name) <= _MAX:
        return name
    digest = hashlib.sha256(app_id.encode()).hexdigest()[:8]
    return f"{name[: _MAX - 9].rstrip('-')}-{digest}"


def runner_id_from_service_id(service_id: str) -> str:
    """The allocation id inside a Nomad-made Consul service id (else the id itself)."""
    found = _NOMAD_SERVICE_ID.match(service_id)
    return found.group(1) if found else service_id


@dataclass(frozen=True, slots=True)
class PayloadRef:
    """Where a runner downloads its payload, and how it proves it may."""

    url: str  # absolute URL of the payload on the yurt server
    sha256: str  # digest the runner checks before unpickling a byte
    token: str  # bearer token for this revision only
    revision: str  # the first 12 hex digits of sha256
    # More variables for the runner (where the file store is: ``yurt.files.location``).
    env: tuple[tuple[str, str], ...] = ()


def ns(seconds: float) -> int:
    """Seconds as the integer nanoseconds Nomad's JSON wants for every duration."""
    return round(seconds * NS_PER_S)
