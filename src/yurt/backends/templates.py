"""Templates: warm interpreters that fork the local backend's runners (docs/cold-starts.md).

One template per interpreter and environment variables (an app environment, and the app data
directory's variables where the app has one), started ahead of demand, speaking
``yurt.runner.template``'s protocol over a ``SOCK_SEQPACKET`` pair. A runner is only forked from
a template that is up and says forking is safe; otherwise it starts as a fresh process, and the
backend says why once per template. A template that dies is started again (after a pause when it
died young); its children live on: the backend follows each through a pidfd.

A forked runner is a ``ForkedProcess``: a pid the backend signals (through its pidfd, so a reused
pid is never hit), its output pipe, and its exit status as the template reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from yurt.privatefs import open_private

log = structlog.get_logger("yurt.local.templates")

MAX_MESSAGE = 1 << 20
# A template that dies this soon after its start waits RESTART_PAUSE_S before the next.
YOUNG_S, RESTART_PAUSE_S = 10.0, 5.0
# The exit code given to a forked runner whose template died before reporting its status.
UNKNOWN_EXIT = 255
# A template that has not answered a fork request within this long is taken for hung: killed.
FORK_REPLY_S = 30.0


class TemplateRefused(Exception):
    """The template did not fork: the message says why."""


class ForkedProcess:
    """A runner forked by a template, as the backend uses a subprocess: pid, stdout, signals,
    exit status."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader, *, watch: bool = True) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        self._done = asyncio.Event()
        self._pidfd: int | None = None
        if watch:
            with contextlib.suppress(ProcessLookupError):  # gone already: the template reports it
                self._pidfd = os.pidfd_open(pid)

    async def wait(self) -> int:
        """Its exit code, once it has exited (negative: the signal that ended it)."""
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal it, unless it has exited (raises ``ProcessLookupError`` if just gone)."""
        if self.returncode is None and self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, sig)

    def exited(self, code: int) -> None:
        """The template reaped it with ``code``."""
        if self.returncode is not None:
            return
        self.returncode = code
        if self._pidfd is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._done.set()

    def orphaned(self) -> None:
        """Its template is gone: learn its exit from the pidfd (its status is lost)."""
        if self._pidfd is None:
            self.exited(UNKNOWN_EXIT)
            return
        asyncio.get_running_loop().add_reader(self._pidfd, self.exited, UNKNOWN_EXIT)


class Template:
    """One template process, seen from the backend."""

    def __init__(self, key: str, python: str, env: Mapping[str, str], log_path: Path) -> None:
        self.key, self.python, self.env, self.log_path = key, python, dict(env), log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.ctl: socket.socket | None = None
        self.started_at = time.monotonic()
        self.state = "starting"  # -> ready -> gone, or starting -> gone
        self.unsafe: str | None = None  # why forking is unsafe, as the template last said
        self.ready = asyncio.get_running_loop().create_future()
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.children: dict[int, ForkedProcess] = {}
        # Exit codes of children that exited before their fork's reply was taken in.
        self.early_exits: dict[int, int] = {}
        self.preloading = 0  # preloads sent and not yet answered

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self, timeout: float) -> None:
        """Start the process and wait for its ready message; raises ``TemplateRefused``."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ctl = ours
        ours.setblocking(False)
        cmd = [self.python, "-m", "yurt.runner.template", "--control-fd", str(theirs.fileno())]
        cmd += ["--parent-pid", str(os.getpid())]
        try:
            with open_private(self.log_path) as out:  # 0600, as every runner log
                self.proc = await asyncio.create_subprocess_exec(
                    *cmd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,
                    pass_fds=(theirs.fileno(),),
                )
        except OSError as exc:
            raise TemplateRefused(f"the template did not start: {exc.strerror}") from exc
        finally:
            theirs.close()
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable)
        try:
            first = await asyncio.wait_for(asyncio.shield(self.ready), timeout)
        except TimeoutError:
            raise TemplateRefused(f"the template was not ready within {timeout:g}s") from None
        self.unsafe = first.get("unsafe")
        self.state = "ready"

    def send(self, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
        """Send one message; raises ``TemplateRefused`` when the template cannot take it."""
        if self.ctl is None or self.state == "gone":
            raise TemplateRefused("the template has exited")
        data = json.dumps(message).encode()
        try:
            if fds:
                socket.send_fds(self.ctl, [data], list(fds))
            else:
                self.ctl.send(data)
        except OSError as exc:
            raise TemplateRefused(f"the template's control socket failed: {exc}") from exc

    async def fork(
        self, runner_id: str, argv: list[str], env: Mapping[str, str], sock_fd: int
    ) -> ForkedProcess:
        """Fork a runner listening on ``sock_fd``; its output comes through a new pipe."""
        read_end, write_end = os.pipe()
        future = asyncio.get_running_loop().create_future()
        self.pending[runner_id] = future
        message = {"op": "fork", "id": runner_id, "argv": argv, "env": dict(env)}
        message["cwd"] = os.getcwd()
        try:
            self.send(message, (sock_fd, write_end))
        except TemplateRefused:
            os.close(read_end)
            self.pending.pop(runner_id, None)
            raise
        finally:
            os.close(write_end)  # the child has its copy (or none will)
        try:
            reply = await asyncio.wait_for(future, FORK_REPLY_S)
        except TimeoutError:
            os.close(read_end)
            if self.preloading:
                # Waiting behind an app's import, which may take minutes: busy, not hung. The
                # child it forks later is unwanted then, and killed as its reply comes.
                raise TemplateRefused(
                    f"the template is still importing an app after {FORK_REPLY_S:g}s"
                ) from None
            if self.proc is not None and self.proc.returncode is None:
                self.proc.kill()  # hung: it is restarted
            raise TemplateRefused(f"the template did not answer within {FORK_REPLY_S:g}s") from None
        except BaseException:
            os.close(read_end)
            raise
        finally:
            self.pending.pop(runner_id, None)
        if reply["op"] != "forked":
            os.close(read_end)
            self.unsafe = reply.get("why")
            raise TemplateRefused(str(reply.get("why")))
        pid = int(reply["pid"])
        stdout = await _reader(read_end)
        # A child that died at once may have been reaped, and reported, before now: it gets no
        # pidfd (its pid may be another process's already) and its exit is the one reported.
        early = self.early_exits.pop(pid, None)
        child = ForkedProcess(pid, stdout, watch=early is None)
        if early is not None:
            child.exited(early)
        elif self.state == "gone":  # the template died meanwhile: no one will report it
            child.orphaned()
        else:
            self.children[pid] = child
        return child

    def _on_readable(self) -> None:
        assert self.ctl is not None
        while True:
            try:
                data = self.ctl.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            self._on_message(json.loads(data))

    def _on_message(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ready" and not self.ready.done():
            self.ready.set_result(message)
        elif op in ("forked", "refused"):
            future = self.pending.get(message.get("id", ""))
            if future is not None and not future.done():
                future.set_result(message)
            elif op == "forked":
                # Its fork was given up: it must not serve on a socket the runner that replaced
                # it listens on. Not reaped yet (its exit is reported after this), so the pid is
                # still the child's.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(message["pid"]), signal.SIGKILL)
                log.info("template_late_fork_killed", template=self.key, runner=message.get("id"))
        elif op == "exited":
            pid, code = int(message["pid"]), int(message["code"])
            child = self.children.pop(pid, None)
            if child is not None:
                child.exited(code)
            else:
                self.early_exits[pid] = code
        elif op == "unsafe":
            # Forking became safe (a thread an import started has ended) or unsafe again.
            was, self.unsafe = self.unsafe, message.get("why")
            if was is not None and self.unsafe is None:
                log.info("template_fork_safe", template=self.key, was=was)
        elif op == "preloaded":
            self.preloading = max(0, self.preloading - 1)
            self.unsafe = message.get("unsafe")
            if message.get("failed"):
                log.warning("template_preload_failed", template=self.key, failed=message["failed"])

    def _lost(self) -> None:
        """The control socket closed: the template is gone (or going)."""
        if self.state == "gone":
            return
        self.state = "gone"
        if self.ctl is not None:
            asyncio.get_running_loop().remove_reader(self.ctl.fileno())
            self.ctl.close()
        why = TemplateRefused("the template exited")
        if not self.ready.done():
            self.ready.set_exception(why)
            self.ready.exception()  # retrieved: nobody else may wait on it
        for future in self.pending.values():
            if not future.done():
                future.set_exception(why)
        for child in self.children.values():
            child.orphaned()
        self.children.clear()

    async def close(self, grace: float = 2.0) -> None:
        """Stop the process (its children live on until the backend stops them)."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._lost()


async def _reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


def template_key(python: str, env: Mapping[str, str]) -> str:
    """Which template serves an interpreter and environment: a short digest of both. Pure."""
    text = json.dumps([python, sorted(env.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:12]
