"""``yurt run``'s https and public-URL options, parsed apart from any side effect."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

import yurt
from yurt.cli.main import build_parser
from yurt.cli.run import config_from_args, examples
from yurt.config import ServerConfig
from yurt.errors import ConfigError
from yurt.spec import build_spec


def parse(*extra: str) -> ServerConfig:
    return config_from_args(
        build_parser().parse_args(["run", "a.py::A", "--data-dir", "/d", *extra])
    )


def test_tls_pair_lands_in_the_router_config() -> None:
    """--tls-cert and --tls-key are passed on as the router's certificate and key paths."""
    config = parse("--tls-cert", "c.pem", "--tls-key", "k.pem")
    assert (config.router.tls_cert, config.router.tls_key) == (Path("c.pem"), Path("k.pem"))


def test_no_tls_by_default() -> None:
    """Without the options the router serves plain http and derives queue URLs per request."""
    config = parse()
    assert (config.router.tls_cert, config.router.tls_key, config.router.public_url) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("given", "missing"),
    [(["--tls-cert", "c.pem"], "--tls-key"), (["--tls-key", "k.pem"], "--tls-cert")],
)
def test_half_a_tls_pair_is_refused(given: list[str], missing: str) -> None:
    """One of --tls-cert/--tls-key without the other: an error naming the missing one."""
    with pytest.raises(
        ConfigError, match=f"^{missing} is missing: --tls-cert and --tls-key go together$"
    ):
        parse(*given)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://yurt.example.com", "https://yurt.example.com"),
        ("https://example.com/yurt/", "https://example.com/yurt"),
        ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
    ],
)
def test_public_url_is_kept_without_trailing_slash(given: str, kept: str) -> None:
    """--public-url becomes the router's public_url, minus a trailing slash."""
    assert parse("--public-url", given).router.public_url == kept


@pytest.mark.parametrize(
    "bad", ["yurt.example.com", "ftp://example.com", "https://", "https://x/?a=1"]
)
def test_public_url_must_be_a_base_url(bad: str) -> None:
    """A --public-url without an http(s) scheme and host, or with a query, is refused."""
    with pytest.raises(ConfigError, match="--public-url"):
        parse("--public-url", bad)


class Prompt(BaseModel):
    prompt: str = "hi"


class Two(yurt.App):
    @yurt.endpoint("/")
    def first(self, body: Prompt) -> Prompt:
        return body

    @yurt.endpoint("/other")
    def other(self, body: Prompt) -> Prompt:
        return body


def test_examples_use_the_base_they_are_given() -> None:
    """The printed curl lines call each endpoint at the given base (https with TLS) and show
    one queue submission."""
    lines = examples("https://127.0.0.1:8443", "default/two", build_spec(Two))
    data = "-H 'content-type: application/json' -d '{\"prompt\": \"hi\"}'"
    assert lines == [
        f"  try: curl -s -X POST https://127.0.0.1:8443/default/two {data}",
        f"  queue: curl -s -X POST https://127.0.0.1:8443/queue/default/two {data}",
        f"  try: curl -s -X POST https://127.0.0.1:8443/default/two/other {data}",
    ]
