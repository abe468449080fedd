"""An App that shows what a runner can see: its environment and the request's headers."""

from __future__ import annotations

import os

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
