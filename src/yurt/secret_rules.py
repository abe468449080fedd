"""What a secret may be named and hold, and how it is listed: pure rules shared by the local
store (``yurt.admin.secrets``) and Nomad's (``yurt.backends.nomad.secrets``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from yurt.config import CONFIG_ENV

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME = 256
MAX_VALUE = 64 * 1024  # an environment variable, not a file: a key, a token, a password
# What the runner's environment sets itself (``runner_env``): a secret must not undo it.
_RUNNER_OWN = frozenset(("PYTHONUNBUFFERED", "CUDA_VISIBLE_DEVICES"))


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a secret, or None when it can. Pure.

    A name is an environment variable's (letters, digits, ``_``, not starting with a digit),
    and never one that configures yurt, Nomad or Consul (as ``[local] pass_env`` refuses them)
    or that the runner's environment sets itself.
    """
    if "=" in name:  # NAME=VALUE given as a name: quoting it would show the value
        return "a secret's name holds no '=': give the name alone, and the value as its own"
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        return (
            f"{name[:MAX_NAME]!r} is not an environment variable name: use letters, digits and "
            f"'_', not starting with a digit, at most {MAX_NAME} characters (e.g. HF_TOKEN)"
        )
    if name in CONFIG_ENV or name in _RUNNER_OWN or name.startswith(("YURT_", "NOMAD_", "CONSUL_")):
        return (
            f"{name} is a name yurt, Nomad or Consul read for themselves, and never reaches a "
            "runner; give the secret another name"
        )
    return None


def value_problem(value: str) -> str | None:
    """Why ``value`` cannot be a secret's value (never quoting it), or None. Pure."""
    if "\x00" in value:
        return "the value holds a NUL character, which no environment variable can"
    if len(value.encode()) > MAX_VALUE:
        return f"the value is larger than {MAX_VALUE} bytes; keep large files in the app's data"
    return None


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """A secret as ``list`` shows it: its name and when it was set, never its value."""

    name: str
    set_at: float  # Unix time
