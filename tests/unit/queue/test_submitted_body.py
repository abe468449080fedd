"""The submission reply is written from a template: it must be what ``json.dumps`` writes."""

from __future__ import annotations

import json

import pytest

from yurt.queue.api import submitted_body


@pytest.mark.parametrize(
    "base",
    [
        "http://127.0.0.1:8080",
        "https://yurt.example.com/prefix",
        'http://odd"host\\name',  # a Host header may carry anything
        "http://h\u00f6st:1",  # non-ASCII: escaped, as json.dumps does by default
    ],
)
@pytest.mark.parametrize("position", [0, 17])
def test_the_submission_reply_is_what_json_dumps_writes(base: str, position: int) -> None:
    request_id = "0123456789abcdef0123456789abcdef"
    url = f"{base}/queue/o/a/requests/{request_id}"
    expected = {
        "status": "IN_QUEUE",
        "request_id": request_id,
        "response_url": url,
        "status_url": f"{url}/status",
        "cancel_url": f"{url}/cancel",
        "queue_position": position,
    }
    body = submitted_body(url, request_id, position)
    assert body == json.dumps(expected).encode()
    assert json.loads(body) == expected
