"""The one adapter over python-nomad: async calls, bounded retries, yurt errors.

python-nomad is synchronous (requests), so every call runs on threads of its own (daemon
threads: see ``threads.py``). A blocking query holds its thread for up to ``blocking_wait``
seconds, one per followed app, so blocking queries have a lane of their own without a limit:
short calls (scale, stop) never wait behind them. Replies are decoded on the same thread, so a
reply that is not JSON (a proxy's HTML page) is mapped like any other failure. Transient
failures (connection errors, timeouts, 5xx, 429, non-JSON replies) are retried with
exponential backoff, at most ``config.retries`` times; every python-nomad or requests
exception becomes a ``ClusterError`` here and nowhere else, by the rules Consul's adapter shares
(``yurt.backends.agentcall``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import nomad
import requests
import structlog
from requests.adapters import HTTPAdapter

from yurt.backends.agentcall import status_error, transport_error, with_retries
from yurt.backends.nomad.threads import DaemonThreads, PoolClosed
from yurt.config import NomadConfig, tls_failure
from yurt.config.base import NOMAD_PORT, parse_addr
from yurt.errors import (
    ClusterError,
    ClusterNotFound,
    ClusterUnavailable,
)

log = structlog.get_logger("yurt.nomad")

T = TypeVar("T")

# Nomad adds up to wait/16 of jitter to a blocking query's wait (as Consul does).
_JITTER = 1 / 16
# Idle connections kept for blocking queries (one per followed app); more still work, each on a
# connection of its own that is closed after its reply.
_WATCH_CONNECTIONS = 256


def wait_param(seconds: float) -> str:
    """A blocking query's ``wait`` as Nomad reads it (a Go duration string such as ``60s``)."""
    return f"{max(1, int(seconds))}s"


class _TLSAdapter(HTTPAdapter):
    """An https adapter that sends and checks ``server_name`` instead of the address's host
    (NOMAD_TLS_SERVER_NAME), when one is set."""

    def __init__(self, server_name: str | None, pool_maxsize: int) -> None:
        self._server_name = server_name
        super().__init__(pool_connections=4, pool_maxsize=pool_maxsize)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._server_name:
            # urllib3 sends server_hostname as SNI and matches the certificate against
            # assert_hostname.
            kwargs["server_hostname"] = self._server_name
            kwargs["assert_hostname"] = self._server_name
        super().init_poolmanager(*args, **kwargs)


def map_error(exc: BaseException, call: str, addr: str = "") -> ClusterError:
    """The yurt error for a python-nomad or requests exception raised by ``call`` to ``addr``
    (``yurt.backends.agentcall`` names the kinds)."""
    resp = getattr(exc, "nomad_resp", None)
    if isinstance(resp, requests.Response):
        status = resp.status_code
        body = (resp.text or "").strip()
        return status_error(
            "nomad", status, f"nomad {call}: HTTP {status}: {body or resp.reason}", body
        )
    cause = resp if isinstance(resp, BaseException) else exc
    if isinstance(cause, requests.JSONDecodeError):
        # 200 with a body that is not JSON: a proxy or load balancer answered, not Nomad.
        text = " ".join(str(cause.doc or "").split())[:200]
        return ClusterUnavailable(
            f"nomad {call}: the reply is not JSON ({text!r}); is a proxy in front of Nomad "
            "answering for it? check NomadConfig.addr",
            service="nomad",
        )
    if isinstance(cause, requests.RequestException | OSError) or tls_failure(cause) is not None:
        return transport_error("nomad", call, cause, NomadConfig, addr, str(cause))
    return ClusterError(f"nomad {call}: {cause!r}", service="nomad")


def _reply_object(api: Any, *path: str, **kwargs: Any) -> dict[str, Any]:
    """Send a request and decode its JSON object reply (on the calling thread)."""
    body = api.request(*path, **kwargs).json()
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _reply_none(api: Any, *path: str, **kwargs: Any) -> None:
    api.request(*path, **kwargs)


def _reply_text(api: Any, *path: str, **kwargs: Any) -> str:
    return str(api.request(*path, **kwargs).text)


def _reply_indexed(api: Any, *path: str, **kwargs: Any) -> tuple[int, list[dict[str, Any]]]:
    """A JSON list reply and its ``X-Nomad-Index`` (0 when absent or unreadable)."""
    response = api.request(*path, **kwargs)
    try:
        index = int(response.headers.get("X-Nomad-Index", "0"))
    except ValueError:
        index = 0
    body = response.json()
    if body is not None and not isinstance(body, list):
        raise ValueError(f"expected a JSON list, got {type(body).__name__}")
    return index, list(body or [])


class NomadClient:
    """Async calls to Nomad's HTTP API (one adapter over python-nomad)."""

    def __init__(self, config: NomadConfig, *, max_workers: int = 32) -> None:
        self.config = config
        host, port, scheme = parse_addr(config.addr, service="nomad", default_port=NOMAD_PORT)
        secure = scheme == "https"
        if secure:
            # Load the files now: requests would only at the first call, and a CA file that
            # is not PEM would then look like a refused handshake.
            config.ssl_context()
        session = requests.Session()
        # Pooled connections for every short call and for the blocking queries beside them.
        size = max_workers + _WATCH_CONNECTIONS
        session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=size))
        session.mount("https://", _TLSAdapter(config.tls_server_name, size))
        self._session = session
        # (None, None), not (): python-nomad reads NOMAD_CLIENT_CERT/KEY itself when ``cert``
        # is empty, and only config.py reads the environment.
        cert = config.client_pair() or (None, None)
        # address= too: python-nomad would otherwise let $NOMAD_ADDR override host and port.
        self._nomad = nomad.Nomad(
            host=host,
            port=port,
            secure=secure,
            address=f"{scheme}://{host}:{port}",
            token=config.token,
            namespace=config.namespace,
            region=config.region,
            timeout=config.timeout,
            verify=config.requests_verify(),
            cert=cert,
            session=session,
        )
        # Two lanes: short calls share a bounded pool; each blocking query (which may wait
        # blocking_wait seconds for news) gets a thread of its own, so none waits behind them.
        self._pool = DaemonThreads(max_workers, "yurt-nomad")
        self._watch_pool = DaemonThreads(None, "yurt-nomad-watch")
        self._closed = False

    # -- plumbing --------------------------------------------------------------------------

    async def _call(self, call: str, fn: Callable[[], T], *, blocking: bool = False) -> T:
        """Run ``fn`` on a thread, retrying transient failures, mapping every error.

        ``fn`` does the request and decodes the reply, so that decoding errors are mapped too.
        ``blocking`` puts it in the lane of blocking queries.
        """
        if self._closed:
            raise ClusterUnavailable(f"nomad {call}: the client is closed", service="nomad")
        loop = asyncio.get_running_loop()
        pool = self._watch_pool if blocking else self._pool

        async def attempt() -> T:
            try:
                return await loop.run_in_executor(pool, fn)
            except PoolClosed as exc:  # closed while this call was being retried
                raise ClusterUnavailable(
                    f"nomad {call}: the client is closed", service="nomad"
                ) from exc
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    # close() cancelled the call while it waited for a thread, not our caller.
                    raise ClusterUnavailable(
                        f"nomad {call}: the client is closed", service="nomad"
                    ) from None
                raise
            except Exception as exc:
                raise map_error(exc, call, self.config.addr) from exc

        return await with_retries(
            "nomad", call, attempt, retries=self.config.retries, transient=self._transient
        )

    def _transient(self, exc: BaseException) -> bool:
        return isinstance(exc, ClusterUnavailable) and not self._closed

    # -- jobs ------------------------------------------------------------------------------

    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs`` with ``{"Job": ..., "PreserveCounts": ...}``; Nomad's reply."""
        fn = functools.partial(_reply_object, self._nomad.jobs, method="post", json=body)
        return await self._call("register", fn)

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        """The job (no ``{"Job":}`` wrapper), or None when Nomad has none by that id."""
        fn = functools.partial(_reply_object, self._nomad.job, job_id, method="get")
        try:
            return await self._call("get_job", fn)
        except ClusterNotFound:
            return None

    async def deregister(self, job_id: str, *, purge: bool = False) -> None:
        """Stop a job and its allocations (a job already gone is fine)."""
        params = {"purge": "true"} if purge else None
        fn = functools.partial(_reply_none, self._nomad.job, job_id, method="delete", params=params)
        with contextlib.suppress(ClusterNotFound):
            await self._call("deregister", fn)

    async def scale(self, job_id: str, group: str, count: int, message: str) -> dict[str, Any]:
        """``POST /v1/job/:id/scale``: set a group's Count (python-nomad has no method)."""
        body = {"Count": count, "Target": {"Group": group}, "Message": message, "Error": False}
        fn = functools.partial(
            _reply_object, self._nomad.job, job_id, "scale", method="post", json=body
        )
        return await self._call("scale", fn)

    # -- allocations -----------------------------------------------------------------------

    async def allocations(
        self, job_id: str, *, index: int = 0, wait: float | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """The job's allocation stubs and the ``X-Nomad-Index`` to block on next.

        With ``index`` > 0 this is a blocking query: Nomad answers when something changed, or
        after ``wait`` (default ``config.blocking_wait``) seconds. python-nomad's own method
        drops the reply's headers, hence the raw request.
        """
        return await self._indexed(job_id, "allocations", index, wait)

    async def _indexed(
        self, job_id: str, what: str, index: int, wait: float | None
    ) -> tuple[int, list[dict[str, Any]]]:
        params: dict[str, Any] = {}
        timeout = self.config.timeout
        if index > 0:
            seconds = self.config.blocking_wait if wait is None else wait
            params = {"index": str(index), "wait": wait_param(seconds)}
            timeout += seconds * (1 + _JITTER)
        fn = functools.partial(
            _reply_indexed,
            self._nomad.job,
            job_id,
            what,
            method="get",
            params=params,
            timeout=timeout,
        )
        return await self._call(what, fn, blocking=index > 0)

    async def evaluations(
        self, job_id: str, *, index: int = 0, wait: float | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """The job's evaluations (in no order) and the ``X-Nomad-Index``; blocking as
        ``allocations`` is."""
        return await self._indexed(job_id, "evaluations", index, wait)

    async def allocation(self, alloc_id: str) -> dict[str, Any]:
        """One allocation in full (ports, devices, deployment health)."""
        fn = functools.partial(_reply_object, self._nomad.allocation, alloc_id, method="get")
        return await self._call("allocation", fn)

    async def stop_allocation(self, alloc_id: str) -> dict[str, Any]:
        """Stop one allocation; Nomad places a replacement (the Count is unchanged)."""
        fn = functools.partial(
            _reply_object, self._nomad.allocation, alloc_id, "stop", method="post"
        )
        return await self._call("stop_allocation", fn)

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
            _reply_text, self._nomad.client.stream_logs, alloc_id, method="get", params=params
        )
        return await self._call("task_log_tail", fn)

    # -- variables -------------------------------------------------------------------------
    # python-nomad adds ``namespace`` by itself only for the endpoints it lists, and ``var`` and
    # ``vars`` are not among them (nomad/api/base.py ``_required_namespace`` reads "variable"):
    # every call below names the namespace.

    async def get_variable(self, path: str) -> dict[str, Any] | None:
        """``GET /v1/var/:path``: the Variable with its Items, or None when there is none."""
        params = {"namespace": self.config.namespace}
        fn = functools.partial(
            _reply_object, self._nomad.variable, path, method="get", params=params
        )
        try:
            return await self._call("get_variable", fn)
        except ClusterNotFound:
            return None

    async def put_variable(self, path: str, items: dict[str, str]) -> None:
        """``PUT /v1/var/:path``: create or replace the Variable's Items (all of them)."""
        body = {"Namespace": self.config.namespace, "Path": path, "Items": items}
        params = {"namespace": self.config.namespace}
        fn = functools.partial(
            _reply_none, self._nomad.variable, path, method="put", params=params, json=body
        )
        await self._call("put_variable", fn)

    async def delete_variable(self, path: str) -> None:
        """``DELETE /v1/var/:path`` (a Variable already gone is fine: Nomad answers 204)."""
        params = {"namespace": self.config.namespace}
        fn = functools.partial(
            _reply_none, self._nomad.variable, path, method="delete", params=params
        )
        with contextlib.suppress(ClusterNotFound):
            await self._call("delete_variable", fn)

    async def list_variables(self, prefix: str) -> list[dict[str, Any]]:
        """``GET /v1/vars?prefix=``: the metadata (Path, ModifyTime...) of the Variables under
        ``prefix``, never their Items."""
        params = {"namespace": self.config.namespace, "prefix": prefix}
        fn = functools.partial(_reply_indexed, self._nomad.variables, method="get", params=params)
        _, found = await self._call("list_variables", fn)
        return found

    # -- agent -----------------------------------------------------------------------------

    async def agent_version(self) -> str:
        """The Nomad version of the agent we talk to (``GET /v1/agent/self``)."""
        fn = functools.partial(_reply_object, self._nomad.agent, "self", method="get")
        reply = await self._call("agent_version", fn)
        version = (reply.get("config") or {}).get("Version") or {}
        if isinstance(version, dict) and version.get("Version"):
            return str(version["Version"])
        build = ((reply.get("member") or {}).get("Tags") or {}).get("build")
        return str(build or "")

    async def close(self) -> None:
        """Stop taking calls; calls still waiting for a thread fail, the session is closed.

        A call already in flight keeps its thread until Nomad answers (a blocking query at
        most ``blocking_wait`` plus jitter); its result is dropped.
        """
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._watch_pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()
