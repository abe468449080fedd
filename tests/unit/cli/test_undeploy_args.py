"""``yurt undeploy`` command lines and app names, apart from any call to a server."""

from __future__ import annotations

import pytest

from yurt.cli.main import build_parser
from yurt.deployment import undeploy
from yurt.errors import DeployError


def test_undeploy_options() -> None:
    """APP, --server, --token and --json are parsed; the server and token default to None."""
    args = build_parser().parse_args(
        ["undeploy", "me/echo", "--server", "http://s:8080", "--token", "t", "--json"]
    )
    assert (args.app, args.server, args.token, args.json) == ("me/echo", "http://s:8080", "t", True)
    bare = build_parser().parse_args(["undeploy", "echo"])
    assert (bare.app, bare.server, bare.token, bare.json) == ("echo", None, None, False)


@pytest.mark.parametrize("app", ["a/b/c", "/echo", "me/", ""])
def test_undeploy_refuses_what_is_not_an_app(app: str) -> None:
    """Only ``owner/name`` or ``name``: anything else fails before any call (no server here)."""
    with pytest.raises(DeployError, match="is not an app"):
        undeploy(app, server="http://127.0.0.1:9")
