"""The client's pure parts: URLs, headers, and reading replies, statuses and event streams."""

from __future__ import annotations

import json

import pytest

from yurt.client.protocol import (
    Completed,
    EventReader,
    InProgress,
    Queued,
    Reply,
    RequestFailed,
    base_url,
    common_headers,
    decode_cancel,
    decode_result,
    decode_status,
    endpoint_url,
    parse_status,
    request_failed,
    request_urls,
    result_step,
    split_app,
    submit_call,
)

BASE = "https://yurt.example.com"


def reply(status: int, body: object, **headers: str) -> Reply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(status, {k.replace("_", "-"): v for k, v in headers.items()}, data)


@pytest.mark.parametrize(
    ("app", "split"),
    [
        ("default/echo", ("default/echo", "")),
        ("default/echo/", ("default/echo", "")),
        ("me/sd/text-to-image/fast", ("me/sd", "text-to-image/fast")),
    ],
)
def test_split_app(app: str, split: tuple[str, str]) -> None:
    """An app id splits into owner/app and the endpoint path after it, as fal's app ids do."""
    assert split_app(app) == split


@pytest.mark.parametrize("app", ["echo", "", "default//echo", "/echo"])
def test_split_app_refuses_ids_without_owner(app: str) -> None:
    """An app id without both owner and app is refused with an example of the form."""
    with pytest.raises(ValueError, match="owner/app"):
        split_app(app)


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://host", "http://", "http://h/?x=1"])
def test_base_url_must_be_http(url: str) -> None:
    """The router URL needs an http(s) scheme and a host."""
    with pytest.raises(ValueError, match="router URL"):
        base_url(url)


def test_urls() -> None:
    """Runs and submissions join the app's path and the given one; request URLs drop both."""
    assert base_url(BASE + "/") == BASE
    assert endpoint_url(BASE, "me/app/a", "/b/") == f"{BASE}/me/app/a/b"
    assert endpoint_url(BASE, "me/app", "", queue=True) == f"{BASE}/queue/me/app"
    url = f"{BASE}/queue/me/app/requests/r1"
    assert request_urls(BASE, "me/app/a", "r1") == (url, f"{url}/status", f"{url}/cancel")


def test_key_is_sent_as_fal_does() -> None:
    """A key goes out as ``Authorization: Key <key>``; without one there is no such header."""
    assert common_headers("id:secret")["authorization"] == "Key id:secret"
    assert "authorization" not in common_headers(None)


def test_submit_call_carries_the_routing_options() -> None:
    """Priority, start timeout, hint, no-retry and the webhook take fal's header and query."""
    call = submit_call(
        BASE,
        "me/app",
        {"x": 1},
        path="gen",
        webhook_url="https://hooks.example.com/a?b=c",
        priority="low",
        hint="lora-7",
        start_timeout=30,
        no_retry=True,
        headers={"x-extra": "1"},
    )
    assert call.method == "POST"
    assert call.url == (
        f"{BASE}/queue/me/app/gen?fal_webhook=https%3A%2F%2Fhooks.example.com%2Fa%3Fb%3Dc"
    )
    assert call.headers == {
        "content-type": "application/json",
        "x-extra": "1",
        "x-fal-queue-priority": "low",
        "x-fal-request-timeout": "30.0",
        "x-fal-runner-hint": "lora-7",
        "x-fal-no-retry": "1",
    }
    assert json.loads(call.body or b"") == {"x": 1}


@pytest.mark.parametrize(
    ("option", "value"), [("priority", "urgent"), ("start_timeout", 0), ("start_timeout", -1)]
)
def test_submit_call_refuses_bad_options(option: str, value: object) -> None:
    """A priority other than normal/low, or a start timeout that is not positive, is refused."""
    with pytest.raises(ValueError, match=option):
        submit_call(BASE, "me/app", {}, **{option: value})


def test_request_failed_reads_detail_and_error_type() -> None:
    """An error reply's detail and error type come from its body, else its headers."""
    err = request_failed(reply(499, {"detail": "gone", "error_type": "client_cancelled"}), "r1")
    assert (err.status, err.detail, err.error_type, err.request_id) == (
        499,
        "gone",
        "client_cancelled",
        "r1",
    )
    assert str(err) == "499 client_cancelled: gone (request r1)"
    err = request_failed(reply(503, b"busy", x_fal_error_type="runner_busy", x_fal_request_id="r2"))
    assert (err.detail, err.error_type, err.request_id) == ("busy", "runner_busy", "r2")


def test_request_failed_keeps_structured_detail_as_json() -> None:
    """A 422's list of validation errors is kept, as JSON text, in ``detail``."""
    detail = [{"loc": ["prompt"], "msg": "Field required"}]
    err = request_failed(reply(422, {"detail": detail}))
    assert json.loads(err.detail) == detail and err.error_type is None


def test_request_failed_without_a_body() -> None:
    """An empty error reply still says what happened: the status's phrase."""
    assert request_failed(reply(502, b"")).detail == "Bad Gateway"


def test_decode_result() -> None:
    """A result is JSON, text when it is not JSON, None when empty; an error raises."""
    assert decode_result(reply(200, {"a": 1})) == {"a": 1}
    assert decode_result(reply(200, b"plain")) == "plain"
    assert decode_result(reply(204, b"")) is None
    with pytest.raises(RequestFailed, match="418"):
        decode_result(reply(418, {"detail": "teapot"}))


def test_parse_status() -> None:
    """The three protocol statuses become fal-client's status types."""
    assert parse_status({"status": "IN_QUEUE", "queue_position": 3, "logs": None}) == Queued(3)
    assert parse_status({"status": "IN_PROGRESS", "logs": []}) == InProgress(logs=[])
    done = {"status": "COMPLETED", "logs": None, "metrics": {"inference_time": 0.5},
            "error": "boom", "error_type": "runner_error"}  # fmt: skip
    assert parse_status(done) == Completed(None, {"inference_time": 0.5}, "boom", "runner_error")
    with pytest.raises(ValueError, match="not a queue status"):
        parse_status({"status": "SLEEPING"})


def test_decode_status_raises_for_errors_and_foreign_replies() -> None:
    """A 404 raises as the router said; a reply that is not a status names the likely cause."""
    with pytest.raises(RequestFailed, match="404"):
        decode_status(reply(404, {"detail": "no request"}), "r1")
    with pytest.raises(RequestFailed, match="not the queue protocol's"):
        decode_status(reply(200, b"<html>"), "r1")


def test_decode_cancel() -> None:
    """202 is requested, 400 ALREADY_COMPLETED is too late; 404 NOT_FOUND raises."""
    assert decode_cancel(reply(202, {"status": "CANCELLATION_REQUESTED"}), "r") == (
        "CANCELLATION_REQUESTED"
    )
    assert decode_cancel(reply(400, {"status": "ALREADY_COMPLETED"}), "r") == "ALREADY_COMPLETED"
    with pytest.raises(RequestFailed, match="NOT_FOUND"):
        decode_cancel(reply(404, {"status": "NOT_FOUND"}), "r")


def test_event_reader_across_chunks() -> None:
    """Events split anywhere, CRLF or LF, comments and multi-line data are read as SSE says."""
    stream = b': keep-alive\r\n\r\ndata: {"a":\r\ndata: 1}\r\n\r\ndata:x\n\n'
    for size in (1, 3, len(stream)):
        reader = EventReader()
        events = []
        for i in range(0, len(stream), size):
            events.extend(reader.feed(stream[i : i + size]))
        assert events == ['{"a":\n1}', "x"]


@pytest.mark.parametrize(
    ("status", "headers", "step"),
    [
        (200, {"preference_applied": "wait=60"}, "done"),
        (418, {"preference_applied": "wait=60"}, "done"),  # the request failed: its result
        (
            400,
            {"preference_applied": "wait=60", "x_yurt_error_type": "request_in_progress"},
            "ask_again",
        ),
        (400, {"x_yurt_error_type": "request_in_progress"}, "follow_stream"),  # a stopping router
        (400, {}, "follow_stream"),  # fal's queue while the request runs
        (200, {}, "done"),
    ],
)
def test_result_step(status: int, headers: dict[str, str], step: str) -> None:
    assert result_step(reply(status, {}, **headers)) == step
