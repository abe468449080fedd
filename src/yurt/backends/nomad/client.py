"""The one adapter over python-nomad: async calls, bounded retries, yurt errors.

python-nomad is synchronous (requests), so every call runs on threads of its own (daemon
threads: see ``threads.py``): a blocking query holds a thread for up to ``blocking_wait``
seconds, and the loop's default executor is small and shared. Transient failures (connection
errors, timeouts, 5xx, 429) are retried with exponential backoff, at most ``config.retries``
times; every python-nomad or requests exception becomes a ``ClusterError`` here and nowhere
else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nomad
import requests
import structlog
from requests.adapters import HTTPAdapter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from yurt.backends.nomad.threads import DaemonThreads
from yurt.config import NomadConfig
from yurt.errors import (
    ClusterBadRequest,
    ClusterError,
    ClusterNotFound,
    ClusterUnauthorized,
    ClusterUnavailable,
    ConfigError,
)

log = structlog.get_logger("yurt.nomad")

T = TypeVar("T")

# Nomad adds up to wait/16 of jitter to a blocking query's wait (as Consul does).
_JITTER = 1 / 16


def parse_addr(addr: str) -> tuple[str, int, bool]:
    """``http[s]://host[:port]`` -> (host, port, secure); port 4646 when absent."""
    parts = urlsplit(addr if "://" in addr else f"http://{addr}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"nomad addr {addr!r} is not an http(s) URL; use e.g. http://127.0.0.1:4646"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"nomad addr {addr!r} has an invalid port: {exc}") from exc
    return parts.hostname, port or 4646, parts.scheme == "https"


def wait_param(seconds: float) -> str:
    """A blocking query's ``wait`` as Nomad reads it (a Go duration string such as ``60s``)."""
    return f"{max(1, int(seconds))}s"


def map_error(exc: BaseException, call: str) -> ClusterError:
    """The yurt error for a python-nomad or requests exception raised by ``call``."""
    resp = getattr(exc, "nomad_resp", None)
    if isinstance(resp, requests.Response):
        status = resp.status_code
        body = (resp.text or "").strip()
        detail = f"nomad {call}: HTTP {status}: {body or resp.reason}"
        if status in (401, 403):
            return ClusterUnauthorized(
                f"{detail}; set a Nomad ACL token (NomadConfig.token or NOMAD_TOKEN) whose "
                "policy allows this call",
                service="nomad",
                status=status,
                message=body,
            )
        if status == 404:
            return ClusterNotFound(detail, service="nomad", status=status, message=body)
        if status == 400:
            return ClusterBadRequest(detail, service="nomad", status=status, message=body)
        if status >= 500 or status == 429:
            return ClusterUnavailable(detail, service="nomad", status=status, message=body)
        return ClusterError(detail, service="nomad", status=status, message=body)
    cause = resp if isinstance(resp, BaseException) else exc
    if isinstance(cause, requests.RequestException | OSError):
        return ClusterUnavailable(
            f"nomad {call}: cannot reach Nomad: {cause}; check NomadConfig.addr and that the "
            "agent is up",
            service="nomad",
        )
    return ClusterError(f"nomad {call}: {cause!r}", service="nomad")


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "nomad_call_retry",
        call=state.kwargs.get("call", "?"),
        attempt=state.attempt_number,
        wait_s=round(state.next_action.sleep, 2) if state.next_action else None,
        error=str(exc),
    )


class NomadClient:
    """Async calls to Nomad's HTTP API (one adapter over python-nomad)."""

    def __init__(self, config: NomadConfig, *, max_workers: int = 32) -> None:
        self.config = config
        host, port, secure = parse_addr(config.addr)
        verify: bool | str = config.verify_tls
        if config.ca_cert is not None:
            verify = str(config.ca_cert)
        session = requests.Session()
        # One pooled connection per worker thread, so blocking queries don't evict each other.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max_workers)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session
        # address= too: python-nomad would otherwise let $NOMAD_ADDR override host and port.
        self._nomad = nomad.Nomad(
            host=host,
            port=port,
            secure=secure,
            address=f"{'https' if secure else 'http'}://{host}:{port}",
            token=config.token,
            namespace=config.namespace,
            region=config.region,
            timeout=config.timeout,
            verify=verify,
            session=session,
        )
        self._pool = DaemonThreads(max_workers, "yurt-nomad")
        self._closed = False

    # -- plumbing --------------------------------------------------------------------------

    async def _call(self, call: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the pool, retrying transient failures, mapping every error."""
        if self._closed:
            raise ClusterUnavailable(f"nomad {call}: the client is closed", service="nomad")
        loop = asyncio.get_running_loop()

        async def attempt(*, call: str) -> T:
            try:
                return await loop.run_in_executor(self._pool, fn)
            except RuntimeError as exc:  # the pool was shut down under us
                raise ClusterUnavailable(f"nomad {call}: {exc}", service="nomad") from exc
            except Exception as exc:
                raise map_error(exc, call) from exc

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ClusterUnavailable),
            stop=stop_after_attempt(self.config.retries + 1),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            before_sleep=_log_retry,
            reraise=True,
        )
        result: T = await retrying(attempt, call=call)
        return result

    def _request(self, api: Any, *path: str, **kwargs: Any) -> requests.Response:
        response: requests.Response = api.request(*path, **kwargs)
        return response

    # -- jobs ------------------------------------------------------------------------------

    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs`` with ``{"Job": ..., "PreserveCounts": ...}``; Nomad's reply."""
        fn = functools.partial(self._request, self._nomad.jobs, method="post", json=body)
        return dict((await self._call("register", fn)).json())

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        """The job (no ``{"Job":}`` wrapper), or None when Nomad has none by that id."""
        fn = functools.partial(self._request, self._nomad.job, job_id, method="get")
        try:
            return dict((await self._call("get_job", fn)).json())
        except ClusterNotFound:
            return None

    async def deregister(self, job_id: str, *, purge: bool = False) -> None:
        """Stop a job and its allocations (a job already gone is fine)."""
        params = {"purge": "true"} if purge else None
        fn = functools.partial(
            self._request, self._nomad.job, job_id, method="delete", params=params
        )
        with contextlib.suppress(ClusterNotFound):
            await self._call("deregister", fn)

    async def scale(self, job_id: str, group: str, count: int, message: str) -> dict[str, Any]:
        """``POST /v1/job/:id/scale``: set a group's Count (python-nomad has no method)."""
        body = {"Count": count, "Target": {"Group": group}, "Message": message, "Error": False}
        fn = functools.partial(
            self._request, self._nomad.job, job_id, "scale", method="post", json=body
        )
        return dict((await self._call("scale", fn)).json())

    async def validate(self, job: dict[str, Any]) -> str:
        """Nomad's verdict on a job body: raises ``ClusterBadRequest``, else its warnings.

        ``/v1/validate/job`` answers 200 even for an invalid job; the errors are in the body.
        """
        fn = functools.partial(
            self._request, self._nomad.validate, "job", method="post", json={"Job": job}
        )
        reply = dict((await self._call("validate", fn)).json())
        errors = [str(e) for e in reply.get("ValidationErrors") or []]
        if reply.get("Error") and not errors:
            errors = [str(reply["Error"])]
        if errors:
            message = "; ".join(errors)
            raise ClusterBadRequest(
                f"nomad validate: the job is invalid: {message}",
                service="nomad",
                status=200,
                message=message,
            )
        return str(reply.get("Warnings") or "")

    # -- allocations -----------------------------------------------------------------------

    async def allocations(
        self, job_id: str, *, index: int = 0, wait: float | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """The job's allocation stubs and the ``X-Nomad-Index`` to block on next.

        With ``index`` > 0 this is a blocking query: Nomad answers when something changed, or
        after ``wait`` (default ``config.blocking_wait``) seconds. python-nomad's own method
        drops the reply's headers, hence the raw request.
        """
        params: dict[str, Any] = {}
        timeout = self.config.timeout
        if index > 0:
            seconds = self.config.blocking_wait if wait is None else wait
            params = {"index": str(index), "wait": wait_param(seconds)}
            timeout += seconds * (1 + _JITTER)
        fn = functools.partial(
            self._request,
            self._nomad.job,
            job_id,
            "allocations",
            method="get",
            params=params,
            timeout=timeout,
        )
        response = await self._call("allocations", fn)
        try:
            new_index = int(response.headers.get("X-Nomad-Index", "0"))
        except ValueError:
            new_index = 0
        stubs = response.json()
        return new_index, list(stubs or [])

    async def allocation(self, alloc_id: str) -> dict[str, Any]:
        """One allocation in full (ports, devices, deployment health)."""
        fn = functools.partial(self._request, self._nomad.allocation, alloc_id, method="get")
        return dict((await self._call("allocation", fn)).json())

    async def stop_allocation(self, alloc_id: str) -> dict[str, Any]:
        """Stop one allocation; Nomad places a replacement (the Count is unchanged)."""
        fn = functools.partial(
            self._request, self._nomad.allocation, alloc_id, "stop", method="post"
        )
        return dict((await self._call("stop_allocation", fn)).json())

    async def task_log_tail(
        self, alloc_id: str, task: str, kind: str = "stderr", size: int = 16384
    ) -> str:
        """The last ``size`` bytes of a task's stdout or stderr (from the node, plain text)."""
        params = {
            "task": task,
            "type": kind,
            "origin": "end",
            "offset": str(size),
            "plain": "true",
        }
        fn = functools.partial(
            self._request,
            self._nomad.client.stream_logs,
            alloc_id,
            method="get",
            params=params,
        )
        return str((await self._call("task_log_tail", fn)).text)

    # -- agent -----------------------------------------------------------------------------

    async def agent_version(self) -> str:
        """The Nomad version of the agent we talk to (``GET /v1/agent/self``)."""
        fn = functools.partial(self._request, self._nomad.agent, "self", method="get")
        reply = (await self._call("agent_version", fn)).json()
        version = (reply.get("config") or {}).get("Version") or {}
        if isinstance(version, dict) and version.get("Version"):
            return str(version["Version"])
        build = ((reply.get("member") or {}).get("Tags") or {}).get("build")
        return str(build or "")

    async def close(self) -> None:
        """Stop taking calls; queued calls are cancelled, the session closed.

        A blocking query already in flight keeps its thread until Nomad answers (at most
        ``blocking_wait`` plus jitter); its result is dropped.
        """
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()
