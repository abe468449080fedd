"""How an environment's build is going: events, read from the installer's output as it runs.

A build moves through stages, in order: ``creating`` (the virtualenv), ``resolving`` (the
installer finds the packages; ``packages`` counts those found so far), ``installing`` (``packages``
of them), ``checking`` (yurt's runner still imports), then ``ready`` or ``failed``. A builder
that finds another one at work says ``waiting``; one that finds the environment built says
``reused``. Each event goes to the caller's sink (``yurt run``'s console) and is appended, as a
JSON line, to ``ROOT/<digest>.progress``, which a process that is not the builder reads
(``yurt deploy`` through the admin API).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

from yurt.privatefs import open_private

Stage = Literal[
    "waiting", "creating", "resolving", "installing", "checking", "ready", "failed", "reused"
]
STAGES: tuple[str, ...] = get_args(Stage)
FINAL: frozenset[str] = frozenset({"ready", "failed", "reused"})


@dataclass(frozen=True)
class BuildEvent:
    """One step of one environment's build."""

    digest: str
    stage: Stage
    elapsed_s: float = 0.0
    packages: int = 0  # found so far (resolving), being installed (installing), in it (ready)
    step: int = 0  # install step, from 1 (fal's list of lists); 0 outside installing
    steps: int = 0
    installer: str = ""
    detail: str = ""  # a failed build's message

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> BuildEvent:
        """The event ``to_json`` wrote; raises ``ValueError`` on anything else."""
        if data.get("stage") not in STAGES or not isinstance(data.get("digest"), str):
            raise ValueError(f"not a build event: {data!r}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)  # type: ignore[arg-type]


ProgressSink = Callable[[BuildEvent], None]


def describe(event: BuildEvent) -> str:
    """The event as one line for a person. Pure."""
    env = f"environment {event.digest[:12]}"
    took = f"{event.elapsed_s:.1f} s"
    step = f" (step {event.step} of {event.steps})" if event.steps > 1 else ""
    match event.stage:
        case "waiting":
            return f"{env}: another build of it is under way; waiting for it"
        case "creating":
            return f"{env}: creating the virtualenv ({event.installer})"
        case "resolving":
            found = f", {_n(event.packages)} found" if event.packages else ""
            return f"{env}: resolving{step}{found}, {took}"
        case "installing":
            return f"{env}: installing {_n(event.packages)}{step}, {took}"
        case "checking":
            return f"{env}: checking that yurt's runner imports, {took}"
        case "ready":
            return f"{env}: ready in {took} ({_n(event.packages)} installed with {event.installer})"
        case "reused":
            return f"{env}: ready (built before)"
        case "failed":
            first = event.detail.splitlines()[0] if event.detail else ""
            return f"{env}: failed after {took}: {first}"
    return f"{env}: {event.stage}"  # pragma: no cover - the match covers every stage


def _n(count: int) -> str:
    return f"{count} package{'' if count == 1 else 's'}"


# pip (not on a terminal) and uv say what they do in these lines.
_PIP_COLLECTING = re.compile(r"^Collecting \S")
_PIP_INSTALLING = re.compile(r"^Installing collected packages: (.+)$")
_PIP_INSTALLED = re.compile(r"^Successfully installed (.+)$")
_UV_RESOLVED = re.compile(r"^Resolved (\d+) packages? in ")
_UV_INSTALLED = re.compile(r"^Installed (\d+) packages? in ")


class OutputWatcher:
    """Reads one install step's output, line by line, into events of that step.

    ``feed`` returns the event a line moves the build to, or None when it says nothing new.
    """

    def __init__(self, start: BuildEvent) -> None:
        self.current = start
        self.installed = 0  # packages this step installed, once the installer says so

    def feed(self, line: str, elapsed_s: float) -> BuildEvent | None:
        line = line.strip()
        now = self.current
        if _PIP_COLLECTING.match(line) and now.stage == "resolving":
            return self._move("resolving", now.packages + 1, elapsed_s)
        if m := _PIP_INSTALLING.match(line):
            return self._move("installing", len(m.group(1).split(",")), elapsed_s)
        if m := _UV_RESOLVED.match(line):
            # uv resolves at once and says how many; it installs only those it lacks
            return self._move("installing", int(m.group(1)), elapsed_s)
        if m := _PIP_INSTALLED.match(line):
            self.installed = len(m.group(1).split())
        elif m := _UV_INSTALLED.match(line):
            self.installed = int(m.group(1))
        return None

    def _move(self, stage: Stage, packages: int, elapsed_s: float) -> BuildEvent:
        self.current = replace(self.current, stage=stage, packages=packages, elapsed_s=elapsed_s)
        return self.current


class ProgressFile:
    """``ROOT/<digest>.progress``: the events of the digest's latest build, one JSON line each."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def start(self) -> None:
        """A new build: forget the last one's events."""
        self.path.unlink(missing_ok=True)

    def append(self, event: BuildEvent) -> None:
        with open_private(self.path, "a") as f:
            f.write(event.to_json() + "\n")

    def read(self, after: int = 0) -> tuple[list[BuildEvent], int]:
        """The events past the first ``after`` lines, and the count to pass next time; a line
        still being written is left for later."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return [], 0
        lines = text.split("\n")[:-1]  # the last piece has no newline yet
        events = []
        for line in lines[after:]:
            try:
                events.append(BuildEvent.from_dict(json.loads(line)))
            except ValueError:
                continue
        return events, len(lines)


class Reporter:
    """One build's stages, each to its progress file and to ``tell``, timed from its start."""

    def __init__(self, file: ProgressFile, tell: ProgressSink, first: BuildEvent) -> None:
        self.file = file
        self.file.start()
        self.sink = tell
        self.first = first
        self.started = time.monotonic()
        self.installed = 0  # packages the steps so far installed

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def say(self, stage: Stage, **fields: Any) -> BuildEvent:
        event = replace(self.first, stage=stage, elapsed_s=self.elapsed(), **fields)
        self.tell(event)
        return event

    def tell(self, event: BuildEvent) -> None:
        # A full disk fails the install itself, with the installer's words.
        with contextlib.suppress(OSError):
            self.file.append(event)
        self.sink(event)


@dataclass(frozen=True)
class EnvStatus:
    """An app's environment as a deploy sees it: ``none`` (no requirements), ``absent``,
    ``building``, ``ready`` or ``failed``; the ``events`` of its latest build past those
    already seen, and ``seen``, the ``after`` of the next call."""

    digest: str | None
    state: str
    events: list[BuildEvent]
    seen: int

    def as_dict(self) -> dict[str, object]:
        return {
            "digest": self.digest,
            "state": self.state,
            "events": [asdict(e) for e in self.events],
            "seen": self.seen,
        }
