"""Tests for ``yurt.runner.fetch``: a runner downloading its payload over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import BaseModel

import yurt
from yurt.errors import PayloadError
from yurt.packaging import pack, read_header
from yurt.runner.fetch import fetch_payload


class Text(BaseModel):
    text: str


class Tiny(yurt.App):
    @yurt.endpoint("/")
    def run(self, body: Text) -> Text:
        return body


class PayloadServer:
    """Serves one payload at /p to one bearer token; fails the first ``failures`` GETs with 503."""

    def __init__(self, data: bytes, token: str, failures: int = 0, cut: int = 0) -> None:
        self.data, self.token, self.failures, self.hits = data, token, failures, 0
        self.cut = cut  # replies cut short before the rest
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                if outer.failures > 0:
                    outer.failures -= 1
                    self.send_error(503)
                elif self.path != "/p":
                    self.send_error(404)
                elif self.headers.get("Authorization") != f"Bearer {outer.token}":
                    self.send_error(401)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(outer.data)))
                    self.end_headers()
                    if outer.cut > 0:  # half the body, then the connection goes
                        outer.cut -= 1
                        self.wfile.write(outer.data[: len(outer.data) // 2])
                        self.close_connection = True
                        return
                    self.wfile.write(outer.data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def payload() -> bytes:
    return pack(Tiny)


@pytest.fixture
def server(payload: bytes) -> Iterator[PayloadServer]:
    srv = PayloadServer(payload, "good")
    yield srv
    srv.close()


def sha(data: bytes) -> str:
    return read_header(data)[0].sha256


def test_downloads_with_the_token(server: PayloadServer, payload: bytes) -> None:
    """The right token and digest give the payload's bytes."""
    assert fetch_payload(server.url + "/p", "good", sha(payload), delays=()) == payload


def test_wrong_token_is_refused_at_once(server: PayloadServer, payload: bytes) -> None:
    """A 401 is not retried: the message says the token was refused."""
    with pytest.raises(PayloadError, match="refused the payload token"):
        fetch_payload(server.url + "/p", "bad", sha(payload), delays=(0.01, 0.01))
    assert server.hits == 1


def test_other_digest_is_refused(server: PayloadServer, payload: bytes) -> None:
    """A payload with another digest than the job names is never returned."""
    with pytest.raises(PayloadError, match="redeploy"):
        fetch_payload(server.url + "/p", "good", "0" * 64, delays=())


def test_missing_revision_is_a_clear_error(server: PayloadServer, payload: bytes) -> None:
    """A 404 names the URL and the fix."""
    with pytest.raises(PayloadError, match="no payload at"):
        fetch_payload(server.url + "/nope", "good", sha(payload), delays=())


def test_unavailable_server_is_retried(payload: bytes) -> None:
    """Two 503s, then the payload: a restarting server does not fail the runner."""
    srv = PayloadServer(payload, "good", failures=2)
    try:
        data = fetch_payload(srv.url + "/p", "good", sha(payload), delays=(0.01, 0.01, 0.01))
    finally:
        srv.close()
    assert data == payload and srv.hits == 3


def test_unreachable_server_names_the_public_url(tmp_path: Path) -> None:
    """Nobody listening: the error says what to check."""
    with pytest.raises(PayloadError, match="public-url"):
        fetch_payload("http://127.0.0.1:9/p", "t", "0" * 64, delays=(0.01,), timeout=2)


def test_a_transfer_cut_short_is_retried(payload: bytes) -> None:
    """A reply that ends half-way (a server restarting mid-download) is tried again."""
    srv = PayloadServer(payload, "good", cut=1)
    try:
        data = fetch_payload(srv.url + "/p", "good", sha(payload), delays=(0.01, 0.01))
    finally:
        srv.close()
    assert data == payload and srv.hits == 2
