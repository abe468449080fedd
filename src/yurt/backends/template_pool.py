"""The local backend's templates, by ``template_key`` (docs/cold-starts.md): started ahead of
demand, started again when one dies, closed when no app's current revision needs them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from yurt.backends.templates import (
    RESTART_PAUSE_S,
    YOUNG_S,
    Template,
    TemplateRefused,
    template_key,
)

log = structlog.get_logger("yurt.local.templates")

Preload = tuple[tuple[str, ...], str | None]  # the modules, the payload


def preloads_of(wants: Mapping[str, tuple[str, Preload]], key: str) -> list[Preload]:
    """What template ``key`` preloads: the current preload of each app whose runners it forks,
    once each, in the order the apps came. Pure."""
    return list(dict.fromkeys(preload for k, preload in wants.values() if k == key))


class TemplatePool:
    """The backend's templates, by ``template_key``: started ahead of demand, restarted when
    they die, closed when no app's current revision needs them.

    Each app wants one template and one preload, those of its current revision (``want``); a
    redeploy whose runners need another interpreter or environment moves the app to another
    template, and the one it leaves is closed once no app wants it. A template restarted after
    it died preloads what its apps want now, not what earlier revisions wanted.
    """

    def __init__(self, log_dir: Path, start_timeout: float) -> None:
        self.log_dir = log_dir
        self.start_timeout = start_timeout
        self._templates: dict[str, Template] = {}
        self._wants: dict[str, tuple[str, Preload]] = {}  # app -> (template key, preload)
        self._sent: dict[str, set[Preload]] = {}  # key -> preloads sent to its process
        self._failed_at: dict[str, float] = {}
        self._said: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def want(
        self,
        app_id: str,
        python: str,
        env: Mapping[str, str],
        modules: list[str],
        payload: str | None,
    ) -> None:
        """Have the template of ``python`` and ``env`` up for ``app_id``, with ``modules``
        imported and ``payload`` unpickled (without setup) ahead of demand: the app's current
        revision. The template its earlier revision used is closed if no app wants it now."""
        key, preload = template_key(python, env), (tuple(modules), payload)
        before = self._wants.get(app_id)
        self._wants[app_id] = (key, preload)
        if before is not None and before[0] != key:
            self._close_unwanted()
        template = self._get(python, env, start=True)
        if template is not None:
            self._send_preloads(template)

    def ready_for(self, app_id: str, python: str, env: Mapping[str, str]) -> Template | None:
        """The template to fork ``app_id``'s runner from, if one is up; else None (one is
        started for the next runner, and this one starts fresh)."""
        template = self._get(python, env, start=True)
        if template is None:
            return None
        if template.state != "ready":
            # Expected once per template (a runner asked for at deploy): not a warning.
            self.say_once(template.key, "its template is still starting", warn=False)
            return None
        return template

    def drop_app(self, app_id: str) -> None:
        """``app_id`` is gone: close the templates no other app uses."""
        self._wants.pop(app_id, None)
        self._close_unwanted()

    def _close_unwanted(self) -> None:
        """Close every template no app's current revision wants."""
        wanted = {key for key, _ in self._wants.values()}
        for key, template in list(self._templates.items()):
            if key not in wanted:
                del self._templates[key]
                self._sent.pop(key, None)
                log.info("template_unwanted", template=key, pid=template.pid)
                self._task(template.close())

    def say_once(self, key: str, why: str, *, warn: bool = True) -> None:
        """Log, once per template and reason, why a runner was not forked."""
        if (key, why) not in self._said:
            self._said.add((key, why))
            say = log.warning if warn else log.info
            say("runner_not_forked", template=key, why=why, fallback="fresh process")

    def reasons(self) -> list[str]:
        """Why runners were not forked, each reason once (for the benchmarks)."""
        return sorted({why for _, why in self._said})

    def settled(self) -> bool:
        """Whether every template is ready with its preloads done (for benchmarks and tests)."""
        return all(t.state == "ready" and not t.preloading for t in self._templates.values())

    def pids(self) -> dict[str, int]:
        """Each template's pid, by key, once it is ready to fork (for the benchmark and tests)."""
        return {
            k: t.pid for k, t in self._templates.items() if t.pid is not None and t.state == "ready"
        }

    async def close(self) -> None:
        """Stop every template (after the runners they forked: they report their exits)."""
        self._closed = True
        templates = list(self._templates.values())
        self._templates.clear()
        await asyncio.gather(*(t.close() for t in templates), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _get(self, python: str, env: Mapping[str, str], *, start: bool) -> Template | None:
        key = template_key(python, env)
        template = self._templates.get(key)
        if template is not None or not start or self._closed:
            return template
        failed = self._failed_at.get(key)
        if failed is not None and time.monotonic() - failed < self.start_timeout:
            return None  # it failed to start lately: runners start fresh meanwhile
        template = Template(key, python, env, self.log_dir / f"template-{key}.log")
        self._templates[key] = template
        self._sent[key] = set()
        self._task(self._run(template))
        return template

    async def _run(self, template: Template) -> None:
        try:
            await template.start(self.start_timeout)
        except TemplateRefused as exc:
            self.say_once(template.key, str(exc))
            self._failed_at[template.key] = time.monotonic()
            await template.close(grace=0.5)
            if self._templates.get(template.key) is template:
                del self._templates[template.key]
            return
        log.info("template_started", template=template.key, pid=template.pid)
        assert template.proc is not None
        code = await template.proc.wait()
        await asyncio.sleep(0)  # its control socket's end may be pending: take it first
        template._lost()
        if self._closed or self._templates.get(template.key) is not template:
            return
        young = time.monotonic() - template.started_at < YOUNG_S
        log.warning("template_exited", template=template.key, code=code, restart=True)
        del self._templates[template.key]
        if young:
            await asyncio.sleep(RESTART_PAUSE_S)
        if self._closed or template.key in self._templates:
            return
        if template.key not in {key for key, _ in self._wants.values()}:
            return
        again = self._get(template.python, template.env, start=True)
        if again is not None:
            self._send_preloads(again)

    def _send_preloads(self, template: Template) -> None:
        """Have ``template`` preload what its apps want now that it has not been sent yet."""
        sent = self._sent.setdefault(template.key, set())
        for preload in preloads_of(self._wants, template.key):
            if preload not in sent:
                sent.add(preload)
                self._task(self._preload(template, preload))

    async def _preload(self, template: Template, preload: Preload) -> None:
        modules, payload = preload
        with contextlib.suppress(TemplateRefused):
            await asyncio.shield(template.ready)
            template.send({"op": "preload", "modules": list(modules), "payload": payload})
            template.preloading += 1

    def _task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
