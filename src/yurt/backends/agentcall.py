"""One way to call a cluster agent's HTTP API (Nomad's, Consul's): map what failed, retry what
is transient.

Each adapter (``backends/nomad/client.py`` over python-nomad, ``discovery/consul.py`` over
py-consul) reads its library's exceptions and hands the facts to this module:

- ``status_error``: an HTTP status the agent answered becomes a yurt error: 401 and 403 a
  ``ClusterUnauthorized`` that says which token to set, 404 ``ClusterNotFound``, 400
  ``ClusterBadRequest``, 5xx and 429 ``ClusterUnavailable``, any other ``ClusterError``;
- ``transport_error``: a failure without a reply becomes ``ClusterUnavailable`` ("cannot
  reach"), except a TLS handshake that failed on a setting, which no retry fixes and whose
  error names the setting (``ClusterTLS.handshake_advice``);
- ``with_retries``: a call is tried again while it fails with ``ClusterUnavailable``, at most
  ``retries`` more times, waiting ``capped_backoff`` (0.2 s doubling to 5 s) in between.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from yurt.backoff import tenacity_wait
from yurt.config import ClusterTLS, tls_failure
from yurt.errors import (
    ClusterBadRequest,
    ClusterError,
    ClusterNotFound,
    ClusterUnauthorized,
    ClusterUnavailable,
)

T = TypeVar("T")

RETRY_FIRST_S, RETRY_CAP_S = 0.2, 5.0  # the wait after a call's first failure, and the cap
# The words of each agent: its name in messages, and where its token and address are set.
_AGENTS = {
    "nomad": ("Nomad", "NomadConfig.token or NOMAD_TOKEN", "NomadConfig.addr"),
    "consul": ("Consul", "ConsulConfig.token or CONSUL_HTTP_TOKEN", "ConsulConfig.addr"),
}


def status_error(service: str, status: int | None, detail: str, message: str = "") -> ClusterError:
    """The yurt error for an agent's answer with HTTP ``status``; ``detail`` says what was
    called and what came back, ``message`` is the agent's own text. Pure."""
    kwargs: dict[str, Any] = {"service": service, "status": status, "message": message}
    if status in (401, 403):
        name, token, _ = _AGENTS[service]
        advice = f"set a {name} ACL token ({token}) whose policy allows this call"
        return ClusterUnauthorized(f"{detail}; {advice}", **kwargs)
    if status == 404:
        return ClusterNotFound(detail, **kwargs)
    if status == 400:
        return ClusterBadRequest(detail, **kwargs)
    if status is not None and (status >= 500 or status == 429):
        return ClusterUnavailable(detail, **kwargs)
    return ClusterError(detail, **kwargs)


def transport_error(
    service: str, call: str, cause: BaseException, tls: type[ClusterTLS], addr: str, why: str
) -> ClusterError:
    """The yurt error for a call to ``addr`` that got no answer (``why`` says what happened).

    A TLS handshake that failed on a setting (an untrusted certificate, the agent's alert) is
    not transient: its error says which setting to change.
    """
    failure = tls_failure(cause)
    if failure is not None and (advice := tls.handshake_advice(failure)) is not None:
        return ClusterError(f"{service} {call}: TLS handshake failed: {advice}", service=service)
    name, _, where = _AGENTS[service]
    return ClusterUnavailable(
        f"{service} {call}: cannot reach {name}: {why}; check {where} and that the agent is "
        f"up{tls.disconnect_hint(addr)}",
        service=service,
    )


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ClusterUnavailable)


async def with_retries(
    service: str,
    call: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    retries: int,
    transient: Callable[[BaseException], bool] = _transient,
) -> T:
    """``attempt()``, tried again while it raises an error ``transient`` accepts (by default
    ``ClusterUnavailable``), at most ``retries`` more times; the last error is raised.

    ``attempt`` maps its own failures (``status_error``, ``transport_error``); each retry is
    logged as ``<service>_call_retry``.
    """
    log = structlog.get_logger(f"yurt.{service}")

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else None
        log.warning(
            f"{service}_call_retry",
            call=call,
            attempt=state.attempt_number,
            wait_s=None if wait is None else round(wait, 2),
            error=str(exc),
        )

    retrying = AsyncRetrying(
        retry=retry_if_exception(transient),
        stop=stop_after_attempt(retries + 1),
        wait=tenacity_wait(first=RETRY_FIRST_S, cap=RETRY_CAP_S),
        before_sleep=before_sleep,
        reraise=True,
    )
    result: T = await retrying(attempt)
    return result
