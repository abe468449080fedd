"""``yurt.serve``: an App behind a real router on an ephemeral port, for users' own tests."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from pydantic import BaseModel

from yurt.app import App
from yurt.config import LocalBackendConfig, RouterConfig, SchedulerConfig, ServerConfig, local_env
from yurt.errors import RequestError
from yurt.platform import Platform


class ServedApp:
    """``async with yurt.serve(Echo) as app: reply = await app.run("/", {...})``."""

    def __init__(
        self, app: type[App], *, data_dir: Path | None = None, config: ServerConfig | None = None
    ) -> None:
        self._cls = app
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if config is None:
            if data_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="yurt-serve-")
                data_dir = Path(self._tmp.name)
            config = ServerConfig(
                data_dir=data_dir,
                router=RouterConfig(port=0),
                scheduler=SchedulerConfig(interval=0.1),
                local=LocalBackendConfig(**local_env()),
            )
        self.platform = Platform(config)
        self.app_id = ""
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """The app's base URL on the router (``http://127.0.0.1:PORT/default/echo``)."""
        return f"{self.platform.url}/{self.app_id}"

    async def run(self, path: str = "/", payload: BaseModel | dict[str, Any] | None = None) -> Any:
        """POST ``payload`` to the endpoint at ``path`` and return the decoded JSON reply."""
        assert self._session is not None, "use ServedApp inside 'async with'"
        body = (
            payload.model_dump_json()
            if isinstance(payload, BaseModel)
            else json.dumps(payload or {})
        )
        url = self.url + ("" if path == "/" else "/" + path.lstrip("/"))
        try:
            async with self._session.post(
                url, data=body, headers={"content-type": "application/json"}
            ) as resp:
                data = await resp.read()
                status, error_type = resp.status, resp.headers.get("x-yurt-error-type")
        except aiohttp.ClientError as exc:
            raise RequestError(
                f"cannot reach the router at {url}: {exc}",
                status=503,
                error_type="router_connection_error",
            ) from exc
        if status >= 400:
            try:
                reply = json.loads(data)
            except ValueError:
                reply = {}
            detail = reply.get("detail", data.decode(errors="replace"))
            if error_type is None:
                error_type = "runner_server_error" if status >= 500 else "bad_request"
            raise RequestError(str(detail), status=status, error_type=error_type)
        return json.loads(data) if data else None

    async def __aenter__(self) -> ServedApp:
        try:
            (self.app_id,) = await self.platform.start(self._cls)
        except BaseException:
            if self._tmp is not None:
                self._tmp.cleanup()
            raise
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        await self.platform.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
