"""An App that shows what a runner can see: its environment and the request's headers."""

from __future__ import annotations

import os

from fastapi import WebSocket

import yurt


class Environment(yurt.App, keep_alive=300):
    """Answers its process's environment, or the headers of the request it serves."""

    app_name = "environment"

    @yurt.endpoint("/")
    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    @yurt.endpoint("/headers")
    def headers(self) -> dict[str, str]:
        request = self.current_request
        assert request is not None
        return {k.lower(): v for k, v in request.headers.items()}

    @yurt.endpoint("/headers/ws", is_websocket=True)
    async def headers_ws(self, websocket: WebSocket) -> None:
        """Sends the headers of the websocket's upgrade request, once."""
        await websocket.accept()
        await websocket.send_json({k.lower(): v for k, v in websocket.headers.items()})
        await websocket.close()
