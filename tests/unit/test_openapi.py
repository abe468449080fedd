"""Tests for ``yurt.openapi``: an App's OpenAPI document, built from its spec alone."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request, Response, WebSocket
from pydantic import BaseModel, Field

import yurt
from yurt.openapi import (
    HTTP_VALIDATION_ERROR_SCHEMA,
    VALIDATION_ERROR_SCHEMA,
    document,
    document_app,
)


class Inner(BaseModel):
    """A nested model, which lands in components beside its parent."""

    x: int


class Prompt(BaseModel):
    prompt: str = Field(description="what to draw", examples=["a yurt at dawn"])
    inner: Inner | None = None


class Picture(BaseModel):
    url: str
    width: int = 512


class Mixed(yurt.App):
    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Picture:
        return Picture(url=body.prompt)

    @yurt.endpoint("/sub/path")
    def no_body(self) -> Picture:
        return Picture(url="")

    @yurt.endpoint("/fal")
    def fal_style(self, prompt: Prompt, request: Request, response: Response) -> Picture:
        return Picture(url=prompt.prompt)

    @yurt.endpoint("/ws", is_websocket=True)
    async def socket(self, websocket: WebSocket) -> None:
        return None


def fastapi_document(*routes: tuple[str, Any]) -> dict[str, Any]:
    """What FastAPI itself writes for these POST routes."""
    app = FastAPI()
    for path, func in routes:
        app.add_api_route(path, func, methods=["POST"])
    return app.openapi()


def generate(body: Prompt) -> Picture:
    return Picture(url="")


def no_body() -> Picture:
    return Picture(url="")


def without_order(node: Any) -> Any:
    """The document without fal's ``x-fal-order-*`` keys."""
    if isinstance(node, dict):
        return {k: without_order(v) for k, v in node.items() if not k.startswith("x-fal-order")}
    return node


@pytest.fixture
def doc() -> dict[str, Any]:
    """The document of Mixed."""
    return document(yurt.build_spec(Mixed))


def test_model_endpoints_are_described_as_fastapi_would(doc: dict[str, Any]) -> None:
    """A one-model endpoint's operation and schemas equal what FastAPI writes for the route."""
    ours = without_order(doc)
    theirs = fastapi_document(("/", generate), ("/sub/path", no_body))
    assert ours["paths"]["/"] == theirs["paths"]["/"]
    assert ours["paths"]["/sub/path"] == theirs["paths"]["/sub/path"]
    for name, schema in theirs["components"]["schemas"].items():
        assert ours["components"]["schemas"][name] == schema


def test_validation_error_schemas_match_fastapi() -> None:
    """The 422 schemas written out in yurt.openapi are FastAPI's own."""
    schemas = fastapi_document(("/", generate))["components"]["schemas"]
    assert schemas["ValidationError"] == VALIDATION_ERROR_SCHEMA
    assert schemas["HTTPValidationError"] == HTTP_VALIDATION_ERROR_SCHEMA


def test_fal_style_endpoint_carries_fastapi_description(doc: dict[str, Any]) -> None:
    """A FastAPI-style endpoint is described by FastAPI: its body model, no Request/Response."""
    operation = doc["paths"]["/fal"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Prompt"}
    assert "parameters" not in operation  # Request and Response are not inputs


def test_websocket_endpoint_is_a_fal_protocol_entry(doc: dict[str, Any]) -> None:
    """A websocket endpoint appears under x-fal-protocol, as fal publishes it."""
    assert doc["paths"]["/ws"]["x-fal-protocol"]["type"] == "websocket"
    assert doc["paths"]["/ws"]["x-fal-protocol"]["operationId"] == "socket"


def test_examples_and_order_marks(doc: dict[str, Any]) -> None:
    """Field examples reach the schemas; fal's order marks list paths and properties."""
    prompt = doc["components"]["schemas"]["Prompt"]
    assert prompt["properties"]["prompt"]["examples"] == ["a yurt at dawn"]
    assert prompt["x-fal-order-properties"] == ["prompt", "inner"]
    assert doc["x-fal-order-paths"] == ["/", "/fal", "/sub/path", "/ws"]


def refs(node: Any) -> list[str]:
    """Every $ref in the document."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    """Each $ref names a schema under components (none left pointing at pydantic's $defs)."""
    found = refs(doc)
    assert found
    schemas = doc["components"]["schemas"]
    for ref in found:
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in schemas


def test_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    """openapi-spec-validator accepts the document as OpenAPI 3.1."""
    import openapi_spec_validator  # a test dependency: a missing one must fail, not skip

    openapi_spec_validator.validate(doc)


def test_document_is_json_and_names_the_app(doc: dict[str, Any]) -> None:
    """The document is plain JSON data, titled with the app's name, OpenAPI 3.1."""
    import json

    assert json.loads(json.dumps(doc)) == doc
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "mixed"


@pytest.mark.parametrize(
    ("path", "app_id"),
    [
        ("/default/echo/openapi.json", "default/echo"),
        ("/default/echo/sub/openapi.json", None),
        ("/default/openapi.json", None),
        ("//echo/openapi.json", None),
        ("/default/echo/openapi.json/", None),
    ],
)
def test_document_path(path: str, app_id: str | None) -> None:
    """Only /{owner}/{app}/openapi.json names an app's document."""
    assert document_app(path) == app_id
