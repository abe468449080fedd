"""Environments built from an App's ``requirements``: one virtualenv per digest, built once.

An environment is named by the digest of its install steps, the Python minor version and yurt's
version (``env_digest``, pure). It lives at ``ROOT/<digest>`` and is complete once its
``yurt-env.json`` exists, written last; every runner and revision with that digest starts from
its interpreter. Builders of one digest take ``ROOT/<digest>.lock`` (``fcntl.flock``, across
processes): the first builds, the others wait and reuse. A failed build removes what it made and
leaves ``ROOT/<digest>.failed`` holding the installer's last lines, so later starts fail at once
with the same message instead of installing again, until the requirements change or
``yurt env rebuild`` forgets it.

The environment sees yurt's own packages through a ``.pth`` file that adds yurt's site
directories *after* its own: the app's pins win for the app's imports, and the runner still
imports aiohttp, pydantic and cloudpickle. A build whose packages break ``import yurt.runner``
fails, naming the app's version and yurt's of each package the app replaced.

The build runs with this process's environment (not a runner's), so pip reads the machine's
configuration (pip.conf, ``PIP_*``: indexes, find-links, constraints, certificates) as it is;
uv is told the same (``yurt.envs_installer``). Its stages go to a sink and to
``ROOT/<digest>.progress`` as they happen (``yurt.envs_progress``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import structlog

from yurt import __version__
from yurt.config import EnvsConfig
from yurt.envs_installer import make_installer
from yurt.envs_lock import BuildLock
from yurt.envs_progress import (
    BuildEvent,
    EnvStatus,
    OutputWatcher,
    ProgressFile,
    ProgressSink,
    Reporter,
)
from yurt.errors import EnvironmentBuildError
from yurt.privatefs import create_private, private_dir, tighten

log = structlog.get_logger("yurt.envs")

READY = "yurt-env.json"
_PTH = "_yurt_runner.pth"
# Asked of yurt's interpreter: where its packages are (an editable yurt among them, through the
# .pth files there, which only ``site.addsitedir`` reads) and its Python minor version.
_BASE_QUERY = (
    "import json, site, sys; "
    "print(json.dumps({'sites': site.getsitepackages(), "
    "'minor': '%d.%d' % sys.version_info[:2]}))"
)
_CHECK = "import yurt.runner"


def install_steps(requirements: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str]]:
    """fal's two spellings as install steps, in order: a list of strings is one step, a list of
    lists one step per inner list. Pure."""
    if all(isinstance(r, str) for r in requirements):
        return [[str(r) for r in requirements]] if requirements else []
    return [[str(r) for r in step] for step in requirements if step]


def env_digest(steps: Sequence[Sequence[str]], python_minor: str, yurt_version: str) -> str:
    """The name of the environment these install steps build for this Python and yurt. Pure."""
    body = json.dumps(
        {"steps": [list(s) for s in steps], "python": python_minor, "yurt": yurt_version},
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode()).hexdigest()[:32]


class BuildCancelled(Exception):
    """A build stopped by ``Environments.close()``: not the requirements' fault, not recorded."""


@dataclass(frozen=True)
class EnvInfo:
    """One environment on disk, as ``yurt env list`` shows it."""

    digest: str
    state: str  # "ready" or "failed"
    steps: list[list[str]]
    detail: str = ""


class Environments:
    """The environments under ``root``, built with ``config`` on top of yurt's interpreter
    ``python``; ``progress`` hears each stage of the builds this object runs or waits for."""

    def __init__(
        self,
        root: Path,
        config: EnvsConfig,
        python: str = sys.executable,
        progress: ProgressSink | None = None,
    ) -> None:
        self.root = root
        self.config = config
        self.python = python
        self.progress = progress
        self._base: dict[str, object] | None = None
        self._guard = threading.Lock()
        self._procs: set[subprocess.Popen[str]] = set()
        self._tasks: set[asyncio.Task[str]] = set()
        self._closed = False

    # -- asking for an interpreter -------------------------------------------------------------

    async def interpreter(self, requirements: Sequence[str] | Sequence[Sequence[str]]) -> str:
        """The interpreter a runner with ``requirements`` starts with, built first if need be.

        No requirements: yurt's own interpreter at once (no environment, no added cold start).
        Raises ``EnvironmentBuildError`` with the installer's last lines.
        """
        steps = install_steps(requirements)
        if not steps:
            return self.python
        return str(await asyncio.to_thread(self.ensure, steps))

    def digest(self, steps: Sequence[Sequence[str]]) -> str:
        """The digest of ``steps`` for yurt's interpreter and version."""
        return env_digest(steps, str(self._base_info()["minor"]), __version__)

    def ensure(self, steps: Sequence[Sequence[str]]) -> Path:
        """The environment's interpreter, built under the digest's lock unless it is there.

        Raises ``EnvironmentBuildError`` (recorded), or ``BuildCancelled`` after ``close()``.
        """
        digest = self.digest(steps)
        env = self.root / digest
        if (env / READY).exists():
            self._tell(BuildEvent(digest, "reused"))
            return env / "bin" / "python"
        self._raise_if_failed(digest)
        private_dir(self.root)  # in the data dir: its owner's only
        with self._locked(digest):
            if (env / READY).exists():  # built by whoever held the lock before
                self._tell(BuildEvent(digest, "reused"))
                return env / "bin" / "python"
            self._raise_if_failed(digest)
            try:
                self._build(digest, steps, env)
            except EnvironmentBuildError as exc:
                failed = {"steps": [list(s) for s in steps], "detail": str(exc)}
                # Whole or not at all: it is read without the lock.
                part = self.root / f".{digest}.failed.part"
                create_private(part)
                part.write_text(json.dumps(failed))
                part.replace(self._failed_path(digest))
                raise
        return env / "bin" / "python"

    def prepare(self, requirements: Sequence[str] | Sequence[Sequence[str]]) -> None:
        """Start building the environment in the background, unless it is built or failed (a
        deploy does, so its first runner finds it ready). Needs a running event loop."""
        state = self.status(requirements).state
        if state in ("absent", "building"):  # a build elsewhere: this one waits on the lock
            task = asyncio.get_running_loop().create_task(self.interpreter(requirements))
            self._tasks.add(task)
            task.add_done_callback(self._prepared)

    def _prepared(self, task: asyncio.Task[str]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # logged and recorded
            log.info("env_prepare_ended", error=str(task.exception()))

    def status(
        self, requirements: Sequence[str] | Sequence[Sequence[str]], after: int = 0
    ) -> EnvStatus:
        """Where the environment of ``requirements`` stands, with its build's events past the
        first ``after`` (for a caller polling)."""
        steps = install_steps(requirements)
        if not steps:
            return EnvStatus(None, "none", [], 0)
        digest = self.digest(steps)
        events, seen = self._progress_file(digest).read(after)
        if (self.root / digest / READY).exists():
            state = "ready"
        elif self._failed_path(digest).exists():
            state = "failed"
        else:
            state = "building" if seen else "absent"
        return EnvStatus(digest, state, events, seen)

    # -- managing what is on disk --------------------------------------------------------------

    def on_disk(self) -> list[EnvInfo]:
        """Every complete or failed environment, by digest."""
        found: list[EnvInfo] = []
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.iterdir()):
            if (path / READY).is_file():
                info = json.loads((path / READY).read_text())
                found.append(EnvInfo(path.name, "ready", info["steps"]))
            elif path.name.endswith(".failed"):
                info = json.loads(path.read_text())
                digest = path.name.removesuffix(".failed")
                found.append(EnvInfo(digest, "failed", info["steps"], info["detail"]))
        return found

    def forget(self, digest: str) -> bool:
        """Remove environment ``digest`` and its failure, so the next runner builds it anew.
        False when there was neither."""
        if not re.fullmatch(r"[0-9a-f]{32}", digest):
            return False
        with self._locked(digest):
            failed = self._failed_path(digest)
            existed = failed.exists() or (self.root / digest).exists()
            failed.unlink(missing_ok=True)
            self._progress_file(digest).start()
            shutil.rmtree(self.root / digest, ignore_errors=True)
        return existed

    # -- building --------------------------------------------------------------------------

    def _locked(self, digest: str) -> BuildLock:
        private_dir(self.root)  # in the data dir: its owner's only
        return BuildLock(self.root / f"{digest}.lock", digest, self._tell)

    def _progress_file(self, digest: str) -> ProgressFile:
        return ProgressFile(self.root / f"{digest}.progress")

    def _tell(self, event: BuildEvent) -> None:
        """Give ``event`` to the sink; a sink that fails does not fail the build."""
        if self.progress is not None:
            try:
                self.progress(event)
            except Exception as exc:  # the console is not the build
                log.warning("env_progress_failed", error=repr(exc))

    def _failed_path(self, digest: str) -> Path:
        return self.root / f"{digest}.failed"

    def _raise_if_failed(self, digest: str) -> None:
        failed = self._failed_path(digest)
        if failed.exists():
            raise EnvironmentBuildError(json.loads(failed.read_text())["detail"])

    def _build(self, digest: str, steps: Sequence[Sequence[str]], env: Path) -> None:
        """Build at ``env`` (the lock is held); on any failure nothing of it is left.

        In place rather than renamed from elsewhere: a virtualenv's scripts name its path in
        their ``#!`` line. ``READY``, written last, is what makes it complete.
        """
        count = sum(len(s) for s in steps)
        short = digest[:12]
        log.info(
            "env_build_started",
            env=short,
            requirements=count,
            steps=len(steps),
            installer=self.config.installer,
        )
        shutil.rmtree(env, ignore_errors=True)  # a build cut short by a crash
        first = BuildEvent(digest, "creating", steps=len(steps), installer=self.config.installer)
        stages = Reporter(self._progress_file(digest), self._tell, first)
        try:
            stages.say("creating")
            self._run([self.python, "-m", "venv", "--without-pip", str(env)], "venv")
            python = env / "bin" / "python"
            installer = make_installer(
                self.config.installer, self.python, python, self.config.pip_args
            )
            for i, step in enumerate(steps, 1):
                # debug: a console's progress bar is being drawn (the stages are events)
                log.debug(
                    "env_installing", env=short, step=i, of=len(steps), requirements=len(step)
                )
                watcher = OutputWatcher(stages.say("resolving", step=i))
                self._run(installer.command(step), installer.name, installer.env, watcher, stages)
                stages.installed += watcher.installed or watcher.current.packages
            stages.say("checking")
            self._see_yurt(env)
            self._check(python)
            stages.say("ready", packages=stages.installed)  # before READY: a poller sees both
            ready = {"steps": [list(s) for s in steps], "yurt": __version__}
            (env / READY).write_text(json.dumps(ready))
            tighten(env)  # what this process wrote itself, with its own umask
        except BaseException as exc:
            shutil.rmtree(env, ignore_errors=True)
            if isinstance(exc, BuildCancelled):
                self._progress_file(digest).start()  # nothing to report: the server stopped
            else:
                stages.say("failed", detail=str(exc))  # ends a console's bar before the log line
            log.warning("env_build_failed", env=short, elapsed_s=stages.elapsed(), error=str(exc))
            raise
        log.info("env_ready", env=short, requirements=count, elapsed_s=stages.elapsed())

    def _run(
        self,
        cmd: list[str],
        what: str,
        env: dict[str, str] | None = None,
        watcher: OutputWatcher | None = None,
        stages: Reporter | None = None,
    ) -> None:
        """Run ``cmd``; its output, read as it comes, moves ``watcher`` and ``stages`` on."""
        # This process's environment, not a runner's: the installer's configuration is in it.
        with subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env} if env else None,
            start_new_session=True,  # a Ctrl-C meant for the server does not cut a build short
            umask=0o077,  # the environment is in the data dir: its owner's only
        ) as proc:
            with self._guard:
                if self._closed:
                    proc.kill()
                self._procs.add(proc)
            lines: list[str] = []
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append(line)
                    if watcher and stages and (event := watcher.feed(line, stages.elapsed())):
                        stages.tell(event)
                proc.wait()
            finally:
                with self._guard:
                    self._procs.discard(proc)
        if self._closed:
            raise BuildCancelled(what)
        if proc.returncode != 0:
            raise EnvironmentBuildError(
                f"{what} failed (exit {proc.returncode}):" + "\n" + self._tail("".join(lines))
            )

    def close(self) -> None:
        """Stop the builds under way (their environments are removed, no failure is
        recorded) and refuse new ones: the server is stopping."""
        with self._guard:
            self._closed = True
            for proc in self._procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def _tail(self, output: str) -> str:
        """The installer's last lines, without the server's paths."""
        # pip's "Looking in indexes/links" lines name the server's configured paths.
        lines = [
            line
            for line in output.splitlines()
            if line.strip() and not line.startswith("Looking in ")
        ]
        text = "\n".join(lines[-self.config.tail_lines :])
        for path, name in ((str(self.root), "<envs>"), (str(Path.home()), "~")):
            text = text.replace(path, name)
        return text

    def _base_info(self) -> dict[str, object]:
        if self._base is None and self.python == sys.executable:
            # This process is yurt's interpreter: no process to start on the warm path.
            minor = f"{sys.version_info.major}.{sys.version_info.minor}"
            self._base = {"sites": site.getsitepackages(), "minor": minor}
        if self._base is None:
            out = subprocess.run(
                [self.python, "-c", _BASE_QUERY], capture_output=True, text=True, check=True
            )
            self._base = json.loads(out.stdout)
        return self._base

    def _see_yurt(self, env: Path) -> None:
        """Add yurt's site directories after the environment's own."""
        sites = [str(s) for s in self._base_info()["sites"]]  # type: ignore[attr-defined]
        lines = "".join(f"import site; site.addsitedir({s!r})\n" for s in sites)
        for own in env.glob("lib/python*/site-packages"):
            (own / _PTH).write_text(lines)

    def _check(self, python: Path) -> None:
        """The runner's imports work in the environment; else name what the app replaced."""
        done = subprocess.run(
            [str(python), "-c", _CHECK], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return
        error = self._tail(done.stderr).splitlines()[-1:] or ["(no output)"]
        own = next(iter(python.parent.parent.glob("lib/python*/site-packages")))
        clashes = _clashes(own)
        replaced = (
            "; ".join(clashes)
            if clashes
            else "no package yurt uses was replaced; a package the app installed breaks it"
        )
        raise EnvironmentBuildError(
            f"the app's requirements break yurt's runner ({error[0]}): {replaced}. "
            "Pin versions yurt supports or drop those pins"
        )


def _clashes(own: Path) -> list[str]:
    """Packages installed in the environment that shadow a different version of yurt's."""
    ours = {_canon(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wants: dict[str, str] = {}
    for req in metadata.requires("yurt") or []:
        name = _canon(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0])
        wants.setdefault(name, req.split(";")[0].strip())
    found = []
    for dist in metadata.distributions(path=[str(own)]):
        name = _canon(dist.metadata["Name"])
        if name in ours and ours[name] != dist.version:
            need = f", yurt requires {wants[name]}" if name in wants else ""
            found.append(
                f"the app installs {name} {dist.version} where yurt runs {name} {ours[name]}{need}"
            )
    return sorted(found)


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
