"""An environment's build in the console: a line per stage, or a progress bar on a terminal."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import TextIO

from yurt.envs_progress import FINAL, BuildEvent, describe

WIDTH = 24
TICK_S = 0.5  # how often the bar's clock moves while the installer is quiet (a big download)


def fraction(event: BuildEvent) -> float:
    """How far along the bar is at ``event``: by stage, and within an install step by the
    packages found. Pure."""
    if event.stage in FINAL:
        return 1.0
    if event.stage in ("resolving", "installing") and event.steps:
        within = 0.8 if event.stage == "installing" else min(0.7, 0.1 + 0.05 * event.packages)
        return 0.05 + 0.8 * (max(event.step, 1) - 1 + within) / event.steps
    return {"waiting": 0.0, "creating": 0.02, "checking": 0.9}.get(event.stage, 0.0)


def bar(event: BuildEvent, elapsed_s: float) -> str:
    """One redrawn line: the bar, then the stage as ``describe`` says it. Pure."""
    done = round(fraction(event) * WIDTH)
    shown = event if event.stage == "waiting" else _at(event, elapsed_s)
    return f"[{'#' * done}{'.' * (WIDTH - done)}] {describe(shown)}"


def _at(event: BuildEvent, elapsed_s: float) -> BuildEvent:
    return replace(event, elapsed_s=round(elapsed_s, 1))


class ConsoleProgress:
    """A progress sink writing to ``out``: on a terminal (``tty``) one line redrawn in place,
    its clock ticking; elsewhere a line each time the stage (or install step) changes."""

    def __init__(self, out: TextIO, tty: bool, prefix: str = "yurt: ") -> None:
        self.out = out
        self.tty = tty
        self.prefix = prefix
        self._lock = threading.Lock()
        self._last: BuildEvent | None = None
        self._since = 0.0  # monotonic time of the last event
        self._ticker: threading.Thread | None = None
        self._done = threading.Event()

    def __call__(self, event: BuildEvent) -> None:
        with self._lock:
            last, self._last, self._since = self._last, event, time.monotonic()
            if not self.tty:
                if last is None or (last.stage, last.step) != (event.stage, event.step):
                    self._write(self.prefix + describe(event) + "\n")
                return
            if event.stage in FINAL:
                self._write("\r\033[K" + self.prefix + describe(event) + "\n")
                return
            self._draw()
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True, name="env-progress")
            self._ticker.start()

    def close(self) -> None:
        """Stop the clock; a bar left unfinished (a build cut short) gets its newline."""
        self._done.set()
        with self._lock:
            if self.tty and self._last is not None and self._last.stage not in FINAL:
                self._write("\n")
                self._last = None

    def _tick(self) -> None:
        while not self._done.wait(TICK_S):
            with self._lock:
                if self._last is None or self._last.stage in FINAL:
                    return
                self._draw()

    def _draw(self) -> None:
        assert self._last is not None
        elapsed = self._last.elapsed_s + time.monotonic() - self._since
        self._write("\r\033[K" + self.prefix + bar(self._last, elapsed))

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
