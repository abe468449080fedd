"""Tests for webhook signing, verification, completion bodies and the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from yurt.config import WebhookConfig
from yurt.queue.webhooks import backoff
from yurt.webhooks import (
    REQUEST_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookVerificationError,
    canonical_url,
    completion_body,
    sign,
    signed_headers,
    verify,
)

SECRET = b"s3cret"
NOW = 1_700_000_000.0
BODY = b'{"request_id":"r1","status":"OK","payload":{"x":1}}'
URL = "https://hooks.example.com/yurt?tenant=a"


def test_sign_is_hmac_sha256_of_timestamp_url_and_body() -> None:
    """The signature is v2= and the hex HMAC-SHA256 of "<timestamp>\\n<url>\\n" + body."""
    signed = b"1700000000\n" + URL.encode() + b"\n" + BODY
    expected = hmac.new(SECRET, signed, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1_700_000_000, URL, BODY) == f"v2={expected}"


def test_signed_headers_name_request_timestamp_and_signature() -> None:
    """A delivery carries the request id, the integer timestamp and its signature."""
    headers = signed_headers(SECRET, "r1", URL, BODY, NOW + 0.9)
    assert headers == {
        "x-yurt-webhook-request-id": "r1",
        "x-yurt-webhook-timestamp": "1700000000",
        "x-yurt-webhook-signature": sign(SECRET, 1_700_000_000, URL, BODY),
    }


def test_verify_accepts_what_was_signed() -> None:
    """A delivery verifies with the secret that signed it."""
    verify(SECRET, signed_headers(SECRET, "r1", URL, BODY, NOW), BODY, URL, now=NOW + 10)


def test_verify_accepts_a_str_secret() -> None:
    """A secret given as str is the same key as its UTF-8 bytes."""
    verify("s3cret", signed_headers(SECRET, "r1", URL, BODY, NOW), BODY, URL, now=NOW)


def test_verify_matches_header_names_case_insensitively() -> None:
    """Header names may arrive in any case, in any mapping."""
    headers = {k.upper(): v for k, v in signed_headers(SECRET, "r1", URL, BODY, NOW).items()}
    verify(SECRET, headers, BODY, URL, now=NOW)


def test_verify_rejects_a_tampered_body() -> None:
    """A body changed after signing fails, naming the signature."""
    headers = signed_headers(SECRET, "r1", URL, BODY, NOW)
    with pytest.raises(WebhookVerificationError, match="does not match the body"):
        verify(SECRET, headers, BODY.replace(b"1", b"2"), URL, now=NOW)


def test_verify_rejects_another_secret() -> None:
    """A delivery signed with another secret fails."""
    headers = signed_headers(b"other", "r1", URL, BODY, NOW)
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify(SECRET, headers, BODY, URL, now=NOW)


@pytest.mark.parametrize("skew", [301.0, -301.0])
def test_verify_rejects_a_timestamp_beyond_the_tolerance(skew: float) -> None:
    """A timestamp further than the tolerance in the past or the future fails."""
    headers = signed_headers(SECRET, "r1", URL, BODY, NOW)
    with pytest.raises(WebhookVerificationError, match="beyond the tolerance of 300 s"):
        verify(SECRET, headers, BODY, URL, now=NOW + skew)


def test_verify_takes_a_custom_tolerance() -> None:
    """The tolerance is the caller's to widen."""
    headers = signed_headers(SECRET, "r1", URL, BODY, NOW)
    verify(SECRET, headers, BODY, URL, now=NOW + 3000, tolerance=3600)


@pytest.mark.parametrize("missing", [TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_verify_rejects_a_missing_header(missing: str) -> None:
    """A delivery without its timestamp or signature fails, naming the header."""
    headers = signed_headers(SECRET, "r1", URL, BODY, NOW)
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match=f"{missing} header is missing"):
        verify(SECRET, headers, BODY, URL, now=NOW)


def test_verify_does_not_need_the_request_id_header() -> None:
    """The request id header is not signed, so verification does not depend on it."""
    headers = signed_headers(SECRET, "r1", URL, BODY, NOW)
    del headers[REQUEST_ID_HEADER]
    verify(SECRET, headers, BODY, URL, now=NOW)


def test_verify_rejects_a_non_integer_timestamp() -> None:
    """A timestamp that is not integer unix seconds fails, naming the header."""
    headers = signed_headers(SECRET, "r1", URL, BODY, NOW)
    headers[TIMESTAMP_HEADER] = "yesterday"
    with pytest.raises(WebhookVerificationError, match=TIMESTAMP_HEADER):
        verify(SECRET, headers, BODY, URL, now=NOW)


def test_verify_rejects_a_signature_of_another_version() -> None:
    """A signature header without any v2= value fails."""
    headers = signed_headers(SECRET, "r1", URL, BODY, NOW)
    headers[SIGNATURE_HEADER] = "v0=abc"
    with pytest.raises(WebhookVerificationError, match="no v2="):
        verify(SECRET, headers, BODY, URL, now=NOW)


@pytest.mark.parametrize("separator", [" ", ",", ", "])
def test_verify_accepts_any_of_several_signatures(separator: str) -> None:
    """While secrets rotate, one matching signature among several suffices."""
    headers = signed_headers(SECRET, "r1", URL, BODY, NOW)
    old = sign(b"old", int(NOW), URL, BODY)
    headers[SIGNATURE_HEADER] = old + separator + headers[SIGNATURE_HEADER]
    verify(SECRET, headers, BODY, URL, now=NOW)


def test_a_delivery_does_not_verify_at_another_url() -> None:
    """A delivery captured at one receiver fails at another: the signature covers the URL."""
    headers = signed_headers(SECRET, "r1", URL, BODY, NOW)
    for elsewhere in [
        "https://other.example.com/yurt?tenant=a",
        "https://hooks.example.com/yurt?tenant=b",
        "https://hooks.example.com/other?tenant=a",
        "http://hooks.example.com/yurt?tenant=a",
        "https://hooks.example.com:8443/yurt?tenant=a",
    ]:
        with pytest.raises(WebhookVerificationError, match="another URL"):
            verify(SECRET, headers, BODY, elsewhere, now=NOW)


@pytest.mark.parametrize(
    ("sent_to", "seen_as"),
    [
        ("https://user:pw@Hooks.Example.COM:443/yurt?tenant=a#frag", URL),
        ("HTTP://127.0.0.1:80", "http://127.0.0.1/"),
        ("http://[::1]:8080/a b?q=é", "http://[::1]:8080/a%20b?q=%C3%A9"),
        ("http://h/%2fx?a=%2f", "http://h/%2Fx?a=%2F"),
    ],
)
def test_verify_takes_the_url_in_any_equivalent_spelling(sent_to: str, seen_as: str) -> None:
    """Case of scheme and host, a default port, user info, a fragment and escapes do not matter."""
    headers = signed_headers(SECRET, "r1", sent_to, BODY, NOW)
    verify(SECRET, headers, BODY, seen_as, now=NOW)
    assert canonical_url(sent_to) == canonical_url(seen_as)


GOOD = signed_headers(SECRET, "r1", URL, BODY, NOW)
HEX = GOOD[SIGNATURE_HEADER].removeprefix("v2=")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (
            TIMESTAMP_HEADER,
            "\uff11\uff17" + "\uff10" * 8,
        ),  # fullwidth digits: int() would take them
        (TIMESTAMP_HEADER, "\u0661\u0667" + "\u0660" * 8),  # Arabic-Indic digits
        (TIMESTAMP_HEADER, "1_700_000_000"),
        (TIMESTAMP_HEADER, "9" * 400),  # overflows float arithmetic
        (TIMESTAMP_HEADER, "9" * 5000),  # beyond int()'s digit limit
        (TIMESTAMP_HEADER, "-1700000000"),
        (TIMESTAMP_HEADER, "1700000000.5"),
        (TIMESTAMP_HEADER, ""),
        (TIMESTAMP_HEADER, "1700000000\x00"),
        (TIMESTAMP_HEADER, b"1700000000"),
        (TIMESTAMP_HEADER, 1700000000),
        (SIGNATURE_HEADER, "v2=" + "é" * 64),  # non-ASCII: compare_digest raised TypeError
        (SIGNATURE_HEADER, "v2=" + HEX[:-1] + "é"),
        (SIGNATURE_HEADER, "v2=" + HEX.upper()),
        (SIGNATURE_HEADER, "v2=" + HEX[:-2]),
        (SIGNATURE_HEADER, "v2=" + HEX + "00"),
        (SIGNATURE_HEADER, "v2=" + "zz" * 32),
        (SIGNATURE_HEADER, "v2="),
        (SIGNATURE_HEADER, ""),
        (SIGNATURE_HEADER, "v1=" + HEX),
        (SIGNATURE_HEADER, "\x00" * 1000),
        (SIGNATURE_HEADER, "v2=" + HEX + "\n"),
        (SIGNATURE_HEADER, ",,, ,"),
        (SIGNATURE_HEADER, b"v2=" + HEX.encode()),
        (SIGNATURE_HEADER, None),
        (SIGNATURE_HEADER, ["v2=" + HEX]),
    ],
)
def test_every_malformed_header_raises_webhook_verification_error(name: str, value: object) -> None:
    """Whatever a header holds, verify raises WebhookVerificationError, never another error."""
    headers: dict[str, object] = dict(GOOD)
    headers[name] = value
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, BODY, URL, now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    ["", "hooks.example.com/yurt", "ftp://h/x", "http://", "http://h:99999/", "http://h/\n", 7],
)
def test_a_url_that_is_not_http_raises_webhook_verification_error(url: object) -> None:
    """A receiver URL that cannot be signed fails verification, naming the URL."""
    with pytest.raises(WebhookVerificationError, match="URL"):
        verify(SECRET, GOOD, BODY, url, now=NOW)  # type: ignore[arg-type]


def test_completion_body_ok_carries_the_json_result() -> None:
    """A JSON result is the payload of an OK body, with no error fields."""
    body = completion_body("r1", True, 200, b'{"y": 2}', "application/json", None, None)
    assert json.loads(body) == {
        "request_id": "r1",
        "gateway_request_id": "r1",
        "status": "OK",
        "payload": {"y": 2},
    }


def test_completion_body_accepts_json_media_types_with_parameters() -> None:
    """application/json with a charset, and +json types, are JSON."""
    for content_type in ["application/json; charset=utf-8", "application/problem+json"]:
        body = completion_body("r1", True, 200, b"[1]", content_type, None, None)
        assert json.loads(body)["payload"] == [1]


def test_completion_body_error_carries_error_and_type() -> None:
    """An ERROR body names the error and its type beside the JSON detail."""
    body = completion_body(
        "r1", False, 422, b'{"detail": "bad"}', "application/json", "bad", "bad_request"
    )
    assert json.loads(body) == {
        "request_id": "r1",
        "gateway_request_id": "r1",
        "status": "ERROR",
        "payload": {"detail": "bad"},
        "error": "bad",
        "error_type": "bad_request",
    }


def test_completion_body_error_without_a_message_names_the_status() -> None:
    """An ERROR with no message of its own says which status ended the request."""
    message = json.loads(completion_body("r1", False, 504, b"", None, None, None))
    assert message["error"] == "the request failed with 504"
    assert message["payload"] is None
    assert "payload_error" not in message
    assert "error_type" not in message


def test_completion_body_non_json_result_has_a_payload_error() -> None:
    """A result that is not JSON is null in the payload, with payload_error saying why."""
    message = json.loads(completion_body("r1", True, 200, b"\x89PNG", "image/png", None, None))
    assert message["status"] == "OK"
    assert message["payload"] is None
    assert "image/png" in message["payload_error"]
    assert "error" not in message


def test_completion_body_declared_json_that_does_not_parse_has_a_payload_error() -> None:
    """A result labelled JSON that does not parse is null, with payload_error saying so."""
    message = json.loads(completion_body("r1", True, 200, b"{oops", "application/json", None, None))
    assert message["payload"] is None
    assert "does not parse" in message["payload_error"]


def test_backoff_doubles_from_the_first_delay() -> None:
    """The delay after try n is first_delay * 2**(n-1)."""
    config = WebhookConfig(first_delay=15.0, max_delay=3600.0)
    assert [backoff(n, config) for n in range(1, 6)] == [15.0, 30.0, 60.0, 120.0, 240.0]


def test_backoff_is_capped_at_max_delay() -> None:
    """No delay exceeds max_delay, even after absurdly many tries."""
    config = WebhookConfig(first_delay=15.0, max_delay=3600.0)
    assert backoff(9, config) == 3600.0
    assert backoff(10_000, config) == 3600.0


def test_backoff_with_no_first_delay_retries_at_once() -> None:
    """first_delay 0 retries without waiting."""
    assert backoff(5, WebhookConfig(first_delay=0.0)) == 0.0


def test_default_schedule_spans_about_two_hours() -> None:
    """Ten attempts with the defaults span roughly two hours, as fal's redelivery does."""
    config = WebhookConfig()
    total = sum(backoff(n, config) for n in range(1, config.max_attempts))
    assert 1.5 * 3600 <= total <= 2.5 * 3600
