"""The runner's token: only the router, which holds it, may call a runner's routes.

The platform gives each runner a token of its own in ``$YURT_RUNNER_TOKEN`` (the local backend
makes one per runner; on Nomad the task reads it from a Nomad Variable through a template, not
from the job's readable ``Env``). The runner takes it out of its environment before the app's
code runs, so the app's subprocesses do not inherit it, and asks for it in
``X-Yurt-Runner-Token`` on every route but the health checks, which the platform's checkers
(Consul's agent, the local backend) call without one; the header is taken off the request
before the app's code sees it. No token given (a runner started by hand
for a test): no check.
"""

from __future__ import annotations

import hmac
from collections.abc import MutableMapping

from yurt.runner.contract import RUNNER_TOKEN_ENV

__all__ = ["OPEN_PATHS", "RUNNER_TOKEN_ENV", "RUNNER_TOKEN_HEADER", "allowed", "take_token"]

RUNNER_TOKEN_HEADER = "x-yurt-runner-token"
# Health checks: asked by Consul's agent and the backends, which hold no token.
OPEN_PATHS = frozenset(("/_yurt/health", "/health"))


def take_token(environ: MutableMapping[str, str]) -> str | None:
    """The runner's token, removed from ``environ``; None when none was given."""
    return environ.pop(RUNNER_TOKEN_ENV, None) or None


def allowed(token: str, path: str, given: str | None) -> bool:
    """Whether a call to ``path`` carrying ``given`` may be served. Pure."""
    if path in OPEN_PATHS:
        return True
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
