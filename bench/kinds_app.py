"""The App of ``bench/endpoint_kinds.py``: one small echo written each way an endpoint can be."""

from fastapi import Request, Response
from pydantic import BaseModel

import yurt


class Msg(BaseModel):
    text: str
    n: int


class Kinds(yurt.App):
    """The same work (validate a small body, return it) behind each kind of endpoint."""

    app_name = "kinds"
    max_multiplexing = 64
    keep_alive = 3600

    @yurt.endpoint("/model")
    async def model(self, body: Msg) -> Msg:
        """yurt's way: one pydantic body, served on the runner's byte path."""
        return body

    @yurt.endpoint("/fastapi")
    async def fastapi(self, body: Msg, request: Request, response: Response) -> Msg:
        """fal's way: FastAPI parameters beside the body, served by FastAPI in the runner."""
        response.headers["x-fal-billable-units"] = "1"
        return body
