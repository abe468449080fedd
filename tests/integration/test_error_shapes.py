"""Every error a caller can meet is JSON with its type: malformed bodies, unserialisable results,
header limits, malformed routing headers and cancelled requests, on both router faces and the
queue."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from error_apps import Shapes, Waits

from support import DEADLINE, Responses, Served, served, wait_until

pytestmark = pytest.mark.timeout(180)

# The malformed bodies that once got the runner's text 500: pydantic's error held the raw
# bytes, which json.dumps could not write.
MALFORMED = {
    "unparsable": b"{x:",
    "invalid utf-8": b'{"prompt": "\xff\xfe"}',
    "raw nul": b'{"prompt": "a\x00b"}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "huge number": b'{"prompt": ' + b"9" * 100_000 + b"}",
}
Answer = tuple[int, dict[str, str], bytes]


async def one_connection(url: str, *requests: bytes) -> list[Answer]:
    """Send each request on one connection, each after the previous one's reply."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    replies = Responses()
    try:
        async with asyncio.timeout(DEADLINE):
            for count, request in enumerate(requests, 1):
                writer.write(request)
                while len(replies.done) < count:
                    data = await reader.read(65536)
                    if not data:
                        return replies.done
                    replies.parser.feed_data(data)
    finally:
        writer.close()
    return replies.done


def post(path: str, body: bytes, headers: list[tuple[str, str]] | None = None) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers or [])
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{head}\r\n"
    ).encode() + body


HEALTH = b"GET /_yurt/health HTTP/1.1\r\nhost: x\r\n\r\n"


async def on_each_face(app: Served, request: bytes) -> dict[str, Answer]:
    """``request`` answered by the fast lane (a connection's first request) and by the aiohttp
    face (the connection's first request, a GET, handed it over there for good)."""
    fast = await one_connection(app.platform.url, request)
    handed = await one_connection(app.platform.url, HEALTH, request)
    assert len(fast) == 1 and len(handed) == 2, (fast, handed)
    return {"fast lane": fast[0], "aiohttp face": handed[1]}


def assert_json_error(answer: Answer, status: int, error_type: str) -> dict[str, Any]:
    """A JSON error body with ``detail`` and ``error_type``, and the error-type headers."""
    code, headers, body = answer
    assert code == status, answer
    assert headers["content-type"].startswith("application/json"), answer
    assert headers["x-yurt-error-type"] == headers["x-fal-error-type"] == error_type
    parsed: dict[str, Any] = json.loads(body)
    assert parsed["error_type"] == error_type and parsed["detail"]
    return parsed


def assert_body_422(parsed: dict[str, Any]) -> None:
    """FastAPI's shape: each entry's loc under "body", a msg and a type; no input echoed."""
    for entry in parsed["detail"]:
        assert set(entry) == {"loc", "msg", "type"}
        assert entry["loc"][0] == "body"


async def test_malformed_bodies_get_422_on_both_faces(tmp_path: Path) -> None:
    """Malformed JSON bodies get the runner's 422 in FastAPI's shape through either face."""
    async with served(Shapes, tmp_path) as app:
        for name, raw in MALFORMED.items():
            answers = await on_each_face(app, post("/" + app.app_id, raw))
            for face, answer in answers.items():
                parsed = assert_json_error(answer, 422, "validation_error")
                assert parsed["detail"][0]["type"] == "json_invalid", (name, face, parsed)
                assert_body_422(parsed)
        # A well-formed body of the wrong type: loc names the field.
        code, body, _ = await app.post(json={"prompt": 3})
        assert code == 422
        assert body["detail"] == [
            {
                "loc": ["body", "prompt"],
                "msg": "Input should be a valid string",
                "type": "string_type",
            }
        ]


async def test_malformed_bodies_fail_queued_requests_with_422(tmp_path: Path) -> None:
    """A queued malformed body completes with the runner's 422 and its error type."""
    async with served(Shapes, tmp_path) as app:
        headers = {"content-type": "application/json"}
        subs = {
            name: await app.submit(data=raw, headers=headers) for name, raw in MALFORMED.items()
        }
        for name, sub in subs.items():
            final = await app.completed(sub)
            assert final["error_type"] == "validation_error", (name, final)
            status, body, result_headers = await app.result(sub)
            assert status == 422, (name, body)
            assert result_headers["x-yurt-error-type"] == "validation_error"
            assert body["detail"][0]["type"] == "json_invalid"
            assert_body_422(body)


@pytest.mark.parametrize(("path", "named"), [("/set", "set"), ("/object", "Opaque")])
async def test_unserialisable_result_is_a_json_500_naming_the_type(
    tmp_path: Path, path: str, named: str
) -> None:
    """An endpoint returning what JSON cannot hold gets a JSON 500 whose detail names the type."""
    async with served(Shapes, tmp_path) as app:
        code, body, headers = await app.post(path, json={})
        assert code == 500, body
        assert headers["content-type"].startswith("application/json")
        assert body["error_type"] == headers["x-yurt-error-type"] == "unserializable_result"
        assert named in body["detail"]


async def test_runner_answers_unknown_routes_in_json(tmp_path: Path) -> None:
    """The runner's own 404 and 405 are JSON with an error type, not aiohttp's text."""
    async with served(Shapes, tmp_path) as app:
        await app.post(json={"prompt": "warm"})  # a runner is up
        [runner] = app.healthy()
        base = f"http://127.0.0.1:{runner.port}"
        for method, path, status, kind in [
            ("GET", "/", 405, "method_not_allowed"),
            ("POST", "/nowhere", 404, "not_found"),
        ]:
            shown = {"x-yurt-runner-token": runner.token}  # as the router calls it
            async with app.session.request(method, base + path, headers=shown) as resp:
                assert resp.status == status
                assert resp.content_type == "application/json"
                assert (await resp.json())["error_type"] == kind
                assert resp.headers["x-yurt-error-type"] == kind


def many_headers(count: int) -> list[tuple[str, str]]:
    return [(f"x-extra-{i}", "1") for i in range(count)]


@pytest.mark.parametrize(
    ("what", "headers", "status", "kind"),
    [
        ("more than the runner's count", many_headers(125), 431, "request_header_fields_too_large"),
        ("far more than any count", many_headers(300), 431, "request_header_fields_too_large"),
        (
            "a header line too long",
            [("x-long", "v" * 9000)],
            431,
            "request_header_fields_too_large",
        ),
    ],
)
async def test_header_limits_get_the_routers_json_431(
    tmp_path: Path, what: str, headers: list[tuple[str, str]], status: int, kind: str
) -> None:
    """Headers past the runner's limits get the router's JSON 431 on both faces, never a text
    400 from a parser."""
    async with served(Shapes, tmp_path) as app:
        request = post("/" + app.app_id, b'{"prompt": "hi"}', headers)
        for answer in (await on_each_face(app, request)).values():
            assert_json_error(answer, status, kind)
        # Queued too: what would fail at the runner is refused at submission.
        [answer] = await one_connection(
            app.platform.url, post(f"/queue/{app.app_id}", b"{}", headers)
        )
        assert_json_error(answer, status, kind)


async def test_long_target_gets_a_json_414(tmp_path: Path) -> None:
    """A request target longer than the runner's line limit gets the router's JSON 414."""
    async with served(Shapes, tmp_path) as app:
        request = post(f"/{app.app_id}?q={'a' * 9000}", b'{"prompt": "hi"}')
        [answer] = await one_connection(app.platform.url, request)
        assert_json_error(answer, 414, "uri_too_long")


async def test_malformed_routing_headers_get_422_with_error_type(tmp_path: Path) -> None:
    """A malformed routing header gets 422 with the error-type headers, direct or queued."""
    async with served(Shapes, tmp_path) as app:
        bad = [("x-fal-request-timeout", "soon")]
        for answer in (await on_each_face(app, post("/" + app.app_id, b"{}", bad))).values():
            parsed = assert_json_error(answer, 422, "bad_request")
            assert parsed["detail"][0]["loc"] == ["header", "x-fal-request-timeout"]
        request = post(f"/queue/{app.app_id}", b"{}", [("x-fal-queue-priority", "urgent")])
        [answer] = await one_connection(app.platform.url, request)
        assert_json_error(answer, 422, "bad_request")


async def test_cancelled_result_carries_the_error_type_headers(tmp_path: Path) -> None:
    """The 499 result of a request cancelled on its runner has X-Yurt- and X-Fal-Error-Type."""
    started = tmp_path / "started"
    async with served(Waits, tmp_path) as app:
        sub = await app.submit(json={"started": str(started)})
        await wait_until(started.exists, what="the endpoint to run")
        async with app.session.put(sub["cancel_url"]) as resp:
            assert resp.status == 202
        final = await app.completed(sub)
        assert final["error_type"] == "client_cancelled"
        status, body, headers = await app.result(sub)
        assert status == 499 and body["error_type"] == "client_cancelled"
        assert headers["x-yurt-error-type"] == headers["x-fal-error-type"] == "client_cancelled"


async def test_requests_a_parser_refuses_get_json_400(tmp_path: Path) -> None:
    """A request the runner's parser refuses (two Content-Types, forwarded as they came) and
    a request line the parser cannot read get JSON 400s, never aiohttp's text page."""
    async with served(Shapes, tmp_path) as app:
        twice = post("/" + app.app_id, b'{"prompt": "a"}', [("content-type", "text/plain")])
        for answer in (await on_each_face(app, twice)).values():
            parsed = assert_json_error(answer, 400, "bad_request")
            assert "Content-Type" in parsed["detail"]
        [runner] = app.healthy()
        [answer] = await one_connection(f"http://127.0.0.1:{runner.port}", b"NOT HTTP\r\n\r\n")
        assert_json_error(answer, 400, "bad_request")
