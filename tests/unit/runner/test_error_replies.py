"""The runner's error replies: FastAPI's 422 shape without the input, and a JSON 500 for a
result JSON cannot hold."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from yurt.runner.invoke import to_response, validation_response


class Body(BaseModel):
    prompt: str


def refusal(raw: bytes) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate_json(raw)
    return caught.value


@pytest.mark.parametrize(
    "raw", [b"{x:", b'{"prompt": "\xff"}', b"[" * 10_000, b'{"prompt": ' + b"9" * 10_000 + b"}"]
)
def test_validation_response_never_echoes_the_input(raw: bytes) -> None:
    """Each 422 entry has loc under "body", msg and type, and nothing of the raw body."""
    response = validation_response(refusal(raw))
    assert response.status == 422 and response.headers["x-yurt-error-type"] == "validation_error"
    body = json.loads(response.body)
    assert body["error_type"] == "validation_error"
    for entry in body["detail"]:
        assert set(entry) == {"loc", "msg", "type"} and entry["loc"][0] == "body"


def test_validation_response_names_the_field() -> None:
    """A field of the wrong type is named under "body"."""
    response = validation_response(refusal(b'{"prompt": 1}'))
    body = json.loads(response.body)
    assert body["detail"] == [
        {"loc": ["body", "prompt"], "msg": "Input should be a valid string", "type": "string_type"}
    ]


class Opaque:
    pass


@pytest.mark.parametrize(("result", "named"), [({1}, "set"), ([Opaque()], "Opaque")])
def test_unserialisable_result_is_a_json_500(result: object, named: str) -> None:
    """What JSON cannot hold is a 500 whose detail names its type."""
    response = to_response(result)
    assert response.status == 500
    assert response.content_type == "application/json"
    body = json.loads(response.body)
    assert body["error_type"] == "unserializable_result" and named in body["detail"]
