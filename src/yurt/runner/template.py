"""A template: a warm interpreter that forks runners (``python -m yurt.runner.template``).

Started by the local backend with the app environment's interpreter, it imports the runner and
what the apps it serves preload, then waits on its control socket (``--control-fd``, a
``SOCK_SEQPACKET`` pair end: one JSON message per packet, file descriptors beside them):

- ``{"op": "preload", "modules": [...], "payload": PATH|null}``: import these modules, and with
  a payload, unpickle it (its App's imports), without calling ``setup()``;
- ``{"op": "fork", "id": RUNNER_ID, "argv": [...], "env": {...}, "cwd": DIR}`` with two
  descriptors, the runner's bound TCP socket and the write end of its output pipe: answered
  ``{"op": "forked", "id", "pid"}``, or ``{"op": "refused", "id", "why"}`` when forking is not
  safe (threads running, CUDA initialised);
- it reports ``{"op": "exited", "pid", "code"}`` for each child it reaps, and
  ``{"op": "unsafe", "why": REASON|null}`` when whether forking is safe changed since it last
  said (a thread an import started has ended, say), looking at least every ``SAFETY_CHECK_S``.

It never opens a socket, starts a thread or touches CUDA. It exits when the backend is gone (a
pidfd of it, ``--parent-pid``) or its control socket closes. Its children do not die with it:
each watches the backend itself, through that pidfd (``--parent-pidfd``), as a fresh runner
watches its parent: it drains once the backend is gone, then kills its process group.

The child: a new session (process group), its output pipe on stdout and stderr, the runner's
environment (``CUDA_VISIBLE_DEVICES`` among it, set before anything can touch CUDA) and working
directory, fresh random seeds, then ``yurt.runner`` as if started fresh: a new event loop,
the payload unpickled, ``setup()``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

import structlog

from yurt.logging import configure

log = structlog.get_logger("yurt.runner.template")

MAX_MESSAGE = 1 << 20
# How often, at most, the template looks whether forking became safe or unsafe while idle.
SAFETY_CHECK_S = 1.0
# What every runner imports before it serves: imported here once, shared by every child.
RUNNER_MODULES = (
    "yurt.aio",
    "yurt.runner.__main__",
    "yurt.runner.server",
    "yurt.runner.logcapture",
    "yurt.runner.gpus",
    "yurt.runner.token",
    "yurt.packaging",
)


def native_threads() -> int:
    """Threads of this process beyond the main one, Python's and native ones alike."""
    try:
        return len(os.listdir("/proc/self/task")) - 1
    except OSError:
        return 0


def not_fork_safe() -> str | None:
    """Why forking now is unsafe, or None: Python threads running (a child would inherit the
    locks they hold, logging's, an HTTP pool's, without the threads), or CUDA initialised (a
    CUDA context does not survive a fork).

    Native threads that imported libraries start without Python's knowledge are not refused:
    OpenBLAS, which numpy and scipy load, starts a pool at import and shuts it down around a
    fork itself (``pthread_atfork``); ``native_threads`` counts them for the log.
    """
    names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if names:
        return f"{len(names)} Python thread(s) running: {', '.join(sorted(names))}"
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and getattr(cuda, "is_initialized", lambda: False)():
        return "CUDA was initialised while importing (torch.cuda.is_initialized())"
    return None


def send(ctl: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(ctl, [data], fds)
    else:
        ctl.send(data)


def preload(modules: list[str], payload: str | None) -> dict[str, Any]:
    """Import ``modules`` and unpickle ``payload`` (not calling setup); what failed, and which
    modules the payload brought that live outside the environment (the app's own code)."""
    import importlib

    failed: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    before = set(sys.modules)
    if payload:
        from pathlib import Path

        from yurt.packaging import unpack
        from yurt.runner.__main__ import PRELOADED

        try:
            # Kept: a child of this payload starts from the unpickled class (setup not run).
            PRELOADED[payload] = unpack(Path(payload).read_bytes())
        except BaseException as exc:
            failed[payload] = f"{type(exc).__name__}: {exc}"
    own = [name for name in set(sys.modules) - before if _outside_environment(name)]
    gc.collect()
    gc.freeze()  # what is here now is shared by every child, never walked by its collections
    return {"failed": failed, "own_modules": sorted(own), "threads": native_threads()}


def _outside_environment(name: str) -> bool:
    """Whether module ``name`` is loaded from outside the interpreter's prefix (user code that
    a new revision may change, unlike the environment's installed packages)."""
    path = getattr(sys.modules.get(name), "__file__", None)
    if not path or name == "yurt" or name.startswith("yurt."):
        return False  # yurt itself, even from a source checkout, is the runner's own
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return not any(os.path.abspath(path).startswith(p + os.sep) for p in prefixes)


class Template:
    """The template's state: its control socket, children, and what it preloaded."""

    def __init__(self, ctl: socket.socket, backend_pidfd: int) -> None:
        self.ctl = ctl
        self.backend_pidfd = backend_pidfd
        self.children: set[int] = set()
        self.payloads: set[str] = set()  # preloaded: a child of another payload drops own_modules
        self.own_modules: set[str] = set()
        self.wake_r, self.wake_w = os.pipe()
        self.sel: selectors.BaseSelector | None = None
        self.said_unsafe: str | None = None  # why forking is unsafe, as the backend last heard

    def serve(self) -> int:
        """The loop: requests, reaped children, the backend's end. Returns the exit code."""
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        sel = self.sel = selectors.DefaultSelector()
        sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        sel.register(self.backend_pidfd, selectors.EVENT_READ, "backend")
        while True:
            for key, _ in sel.select(timeout=SAFETY_CHECK_S):
                if key.data == "backend":
                    return 0
                if key.data == "wake":
                    while True:
                        try:
                            if not os.read(self.wake_r, 512):
                                break
                        except BlockingIOError:
                            break
                if key.data == "ctl" and not self.on_request():
                    return 0
            self.reap()
            self.report_safety()

    def report_safety(self) -> None:
        """Tell the backend when forking became safe or unsafe since it last heard: it forks
        only from a template it believes safe, so a thread that ended would otherwise keep
        every runner fresh until the next preload."""
        why = not_fork_safe()
        if why != self.said_unsafe:
            self.said_unsafe = why
            send(self.ctl, {"op": "unsafe", "why": why})

    def reap(self) -> None:
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 255 << 8
            if done:
                self.children.discard(pid)
                code = os.waitstatus_to_exitcode(status)
                send(self.ctl, {"op": "exited", "pid": pid, "code": code})

    def on_request(self) -> bool:
        """Handle one message; False when the control socket closed."""
        try:
            data, fds, _, _ = socket.recv_fds(self.ctl, MAX_MESSAGE, 4)
        except (ConnectionResetError, BlockingIOError):
            return True
        if not data:
            return False
        message = json.loads(data)
        op = message.get("op")
        try:
            if op == "fork":
                self.fork(message, fds)
            elif op == "preload":
                if message.get("payload"):
                    # A new revision: the app's own modules load fresh from its files.
                    for name in self.own_modules:
                        sys.modules.pop(name, None)
                found = preload(message.get("modules", []), message.get("payload"))
                self.own_modules.update(found["own_modules"])
                if message.get("payload"):
                    self.payloads.add(message["payload"])
                log.info("template_preloaded", **found)
                self.said_unsafe = not_fork_safe()
                send(self.ctl, {"op": "preloaded", **found, "unsafe": self.said_unsafe})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def fork(self, message: dict[str, Any], fds: list[int]) -> None:
        runner_id = message["id"]
        self.said_unsafe = not_fork_safe()  # the backend learns it from the reply
        why = self.said_unsafe if len(fds) == 2 else "the request did not carry two descriptors"
        if why is not None:
            send(self.ctl, {"op": "refused", "id": runner_id, "why": why})
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                code = self.child(message, fds[0], fds[1])
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        self.children.add(pid)
        send(self.ctl, {"op": "forked", "id": runner_id, "pid": pid})

    def child(self, message: dict[str, Any], sock_fd: int, out_fd: int) -> int:
        """In the forked child: become the runner. Returns only on failure."""
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        # detach(): the socket object must never close the number again, once reused.
        for fd in (devnull, out_fd, self.wake_r, self.wake_w, self.ctl.detach()):
            os.close(fd)
        if self.sel is not None:
            self.sel.close()
        os.environ.clear()
        os.environ.update(message["env"])
        os.chdir(message.get("cwd") or "/")
        reseed()
        argv = list(message["argv"])
        argv[argv.index("--fd") + 1] = str(sock_fd)
        if "--parent-pid" in argv:
            # Its parent is this template, not the backend named there: it watches the backend
            # through the template's pidfd of it, and, as a fresh runner, drains once the
            # backend is gone and takes its process group with it when it exits.
            argv += ["--parent-pidfd", str(self.backend_pidfd)]
        payload = argv[argv.index("--payload") + 1] if "--payload" in argv else None
        if payload not in self.payloads:
            # Another revision: the app's own modules load fresh from its payload and files.
            for name in self.own_modules:
                sys.modules.pop(name, None)
        from yurt.runner.__main__ import main as runner_main

        sys.argv = ["yurt.runner", *argv]
        runner_main(argv)  # exits the process
        return 70


def reseed() -> None:
    """Fresh seeds: each child would otherwise draw the same "random" numbers."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "seed"):
        torch.seed()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m yurt.runner.template")
    p.add_argument("--control-fd", type=int, required=True)
    p.add_argument("--parent-pid", type=int, required=True, help="the backend: exit when gone")
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", choices=["console", "json"], default="console")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Import, say ready, fork on request until the backend is gone."""
    t0 = time.monotonic()
    args = parse_args(argv)
    configure(args.log_level, args.log_format)
    import importlib

    for name in RUNNER_MODULES:
        importlib.import_module(name)
    from yurt.aio import resolve_loop

    resolve_loop("auto")  # imports uvloop where it is installed
    gc.collect()
    gc.freeze()
    ctl = socket.socket(fileno=args.control_fd)
    ctl.setblocking(True)
    try:
        backend = os.pidfd_open(args.parent_pid)
    except ProcessLookupError:
        os._exit(0)
    template = Template(ctl, backend)
    template.said_unsafe = not_fork_safe()
    send(ctl, {"op": "ready", "pid": os.getpid(), "unsafe": template.said_unsafe})
    log.info("template_ready", pid=os.getpid(), import_s=round(time.monotonic() - t0, 3))
    code = template.serve()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
