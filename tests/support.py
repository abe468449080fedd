"""Shared test helpers: fast configuration, served platforms, and condition polling."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httptools
import pytest
from prometheus_client.parser import text_string_to_metric_families

from yurt.app import App
from yurt.config import (
    BackoffConfig,
    HealthConfig,
    LocalBackendConfig,
    QueueConfig,
    RouterConfig,
    SchedulerConfig,
    ServerConfig,
)
from yurt.platform import Platform

from faces import front

# Generous: these tests must hold on a loaded 2-core machine.
DEADLINE = 60.0


def fast_retries(queue: QueueConfig) -> QueueConfig:
    """Retry backoffs of tens of milliseconds, unless the test set its own."""
    if "retry_backoff" in queue.model_fields_set:
        return queue
    return queue.model_copy(update={"retry_backoff": 0.02, "retry_backoff_max": 0.1})


def fast_config(data_dir: Path, queue: QueueConfig | None = None, **router: Any) -> ServerConfig:
    """Short intervals so lifecycle tests run in seconds."""
    return ServerConfig(
        data_dir=data_dir,
        router=RouterConfig(port=0, **router),
        queue=fast_retries(queue or QueueConfig()),
        scheduler=SchedulerConfig(interval=0.05),
        local=LocalBackendConfig(
            health=HealthConfig(interval=0.2, timeout=2.0, failure_threshold=2),
            backoff=BackoffConfig(step=0.5, cap=2.0),
            kill_after=3.0,
        ),
    )


SampleKey = tuple[str, frozenset[tuple[str, str]]]


def sample_key(name: str, labels: dict[str, str] | None = None) -> SampleKey:
    """The key ``samples`` files a sample under."""
    return name, frozenset((labels or {}).items())


def samples(exposition: str) -> dict[SampleKey, float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's parser."""
    return {
        sample_key(s.name, s.labels): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


RUNNER_LOG = re.compile(r".+-r-[0-9a-f]+\.log")


def runner_logs(logs: Path) -> list[Path]:
    """The runners' logs in ``logs``, by name: a fork template keeps its own log beside them
    (``template-<key>.log``), and a directory's listing comes in no set order."""
    return sorted(p for p in logs.glob("*.log") if RUNNER_LOG.fullmatch(p.name))


async def wait_until(
    predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition"
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


class Served:
    """A running platform with one app, and an HTTP session to call it."""

    def __init__(
        self,
        platform: Platform,
        app_id: str,
        session: aiohttp.ClientSession,
        base: str | None = None,
    ) -> None:
        self.platform = platform
        self.app_id = app_id
        self.session = session
        self.base = base or platform.url  # where calls go: the router, or a relay to a face

    @property
    def url(self) -> str:
        return f"{self.base}/{self.app_id}"

    async def post(self, path: str = "", json: Any = None, **kw: Any) -> tuple[int, Any, Any]:
        """POST and return (status, decoded JSON or text, headers)."""
        async with self.session.post(self.url + path, json=json, **kw) as resp:
            body: Any
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = await resp.text()
            return resp.status, body, resp.headers

    async def submit(
        self, path: str = "", json: Any = None, query: str = "", **kw: Any
    ) -> dict[str, Any]:
        """Submit to the queue; returns the submit reply (request_id and URLs)."""
        url = f"{self.base}/queue/{self.app_id}{path}" + (f"?{query}" if query else "")
        async with self.session.post(url, json=json, **kw) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["x-fal-request-id"]
            reply: dict[str, Any] = await resp.json()
            return reply

    async def status(self, sub: dict[str, Any], logs: bool = False) -> tuple[int, dict[str, Any]]:
        """GET the request's status: (HTTP status, status object)."""
        params = {"logs": "1"} if logs else {}
        async with self.session.get(sub["status_url"], params=params) as resp:
            return resp.status, await resp.json()

    async def completed(self, sub: dict[str, Any], logs: bool = False) -> dict[str, Any]:
        """Wait until the request is COMPLETED; returns its final status object."""

        async def done() -> dict[str, Any] | None:
            code, body = await self.status(sub, logs)
            return body if code == 200 and body["status"] == "COMPLETED" else None

        found: dict[str, Any] = await wait_until(done, what=f"request {sub['request_id']}")
        return found

    async def result(self, sub: dict[str, Any]) -> tuple[int, Any, Any]:
        """GET the request's result: (HTTP status, decoded JSON, headers)."""
        async with self.session.get(sub["response_url"]) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers

    def live_runners(self) -> list[Any]:
        return [
            r
            for r in self.platform.backend.runners(self.app_id)
            if r.state.value in ("PENDING", "SETUP", "IDLE", "RUNNING")
        ]

    def healthy(self) -> list[Any]:
        return self.platform.registry.healthy(self.app_id)


@asynccontextmanager
async def served(
    cls: type[App],
    data_dir: Path,
    queue: QueueConfig | None = None,
    face: str = "fast",
    **router: Any,
) -> AsyncIterator[Served]:
    """Serve ``cls`` on a fast-configured platform; stops every runner on exit.

    ``face``: "handed" sends every call through a connection the router handed over to its
    aiohttp face (``faces.py``), "fast" straight to the router.
    """
    platform = Platform(fast_config(data_dir, queue, **router))
    await platform.start()
    try:
        app_id = await platform.add_app(cls)
        async with (
            front(platform.url, face) as base,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s,
        ):
            yield Served(platform, app_id, s, base)
    finally:
        await platform.stop()


ROOT = Path(__file__).resolve().parent.parent


async def yurt_command(*args: str) -> tuple[int, str, str]:
    """Run the yurt command to its end without blocking the loop (doubles may serve on it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "yurt.cli",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    return proc.returncode or 0, out.decode(), err.decode()


async def start_yurt(
    args: list[str], log: Path, ready: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    """Start a long-running yurt command (output to ``log``) and wait for its URL.

    ``ready`` is a regular expression whose first group is the URL the command prints once it
    serves. The environment drops NOMAD_* and CONSUL_* so the machine's own settings never leak
    into a test; ``env`` replaces the whole environment. The caller stops the process.
    """
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))}
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "yurt.cli", *args],
            cwd=ROOT,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )

    def url() -> str | None:
        if proc.returncode is not None:
            pytest.fail(f"yurt {args[0]} exited {proc.returncode}:\n{log.read_text()}")
        found = re.search(ready, log.read_text())
        return found.group(1) if found else None

    try:
        found: str = await wait_until(url, what=f"yurt {args[0]} to serve")
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, found


class Responses:
    """Parses the responses arriving on one raw connection."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, dict[str, str], bytes]] = []
        self._headers: dict[str, str] = {}
        self._body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = {}, b""


@asynccontextmanager
async def running_yurt(args: list[str], log: Path, ready: str) -> AsyncIterator[str]:
    """``start_yurt`` for the length of a ``with``: yields the URL; on leaving, SIGTERM and an
    exit code of 0 (the output in the failure), or a kill when the body failed."""
    proc, url = await start_yurt(args, log, ready)
    try:
        yield url
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), DEADLINE)
        assert code == 0, await asyncio.to_thread(log.read_text)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def throwaway_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 in ``directory``: (ca, cert chain, key)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(files[0])
    files[1].write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(files[2])
    return files


@contextmanager
def yurt_run_https(
    target: str, data_dir: Path, cert: Path, key: Path, *extra: str
) -> Iterator[str]:
    """``yurt run TARGET`` serving https with ``cert``: yields the app's URL as printed; on
    leaving, SIGTERM and an exit code of 0, or a kill when the body failed."""
    command = [sys.executable, "-m", "yurt.cli", "run", target, "--port", "0",
               "--tls-cert", str(cert), "--tls-key", str(key),
               "--data-dir", str(data_dir), "--log-format", "json", *extra]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the URL is printed (or the process dies)
        found = re.search(r"at (https://\S+)", line)
        assert found, f"yurt run printed {line!r}"
        yield found.group(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class IdleBackend:
    """A backend with no runners that does nothing: for a router made without one."""

    def runners(self, app_id: str) -> list[Any]:
        return []

    def target(self, app_id: str) -> int:
        return 0

    def pick_stops(self, app_id: str, idle: Sequence[str]) -> list[str]:
        return list(idle)

    def unplaced(self, app_id: str) -> None:
        return None

    def add_failure_listener(self, listener: Any) -> None:
        pass

    def add_keep_listener(self, listener: Any) -> None:
        pass
