"""The OpenAPI 3 document of an App, in the shape fal publishes for its apps. Pure.

fal's document is FastAPI's (``FastAPI.openapi()`` over the app's routes) with ``x-fal-order-*``
keys listing paths and each schema's properties in declaration order, and websocket endpoints
described under ``x-fal-protocol``. ``document(spec)`` builds the same from an ``AppSpec`` alone,
so the router can answer ``openapi.json`` without a runner: a model-style endpoint is described
here exactly as FastAPI would describe ``def f(body: In) -> Out``; a fal-style endpoint carries
the description FastAPI itself gave it when the spec was built (``EndpointSpec.openapi``).
Examples come from the models' ``Field(examples=...)``, as pydantic writes them.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only read, never built here: App.openapi() imports this module
    from yurt.spec import AppSpec, EndpointSpec

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/"

# FastAPI's own schemas for its 422 answer (fastapi/openapi/utils.py), written out so that the
# document needs no FastAPI; a test checks them against FastAPI's.
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "properties": {
        "loc": {
            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "type": "array",
            "title": "Location",
        },
        "msg": {"type": "string", "title": "Message"},
        "type": {"type": "string", "title": "Error Type"},
        "input": {"title": "Input"},
        "ctx": {"type": "object", "title": "Context"},
    },
    "type": "object",
    "required": ["loc", "msg", "type"],
    "title": "ValidationError",
}
HTTP_VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "properties": {
        "detail": {
            "items": {"$ref": f"{REF}ValidationError"},
            "type": "array",
            "title": "Detail",
        }
    },
    "type": "object",
    "title": "HTTPValidationError",
}


def document(spec: AppSpec) -> dict[str, Any]:
    """The OpenAPI document of every endpoint of ``spec``."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for ep in spec.endpoints:
        if ep.is_websocket:
            paths[ep.path] = {"x-fal-protocol": _websocket_protocol(ep)}
            if ep.realtime is not None:
                paths[ep.path]["post"] = _realtime_mirror(ep, schemas)
        elif ep.style == "fastapi":
            piece = ep.openapi or {}
            paths.update(copy.deepcopy(piece.get("paths", {})))
            schemas.update(copy.deepcopy(piece.get("schemas", {})))
        else:
            paths[ep.path] = {"post": _model_operation(ep, schemas)}
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": spec.app_name, "version": "0.1.0"},
        "paths": paths,
    }
    if schemas:
        doc["components"] = {"schemas": dict(sorted(schemas.items()))}
    return mark_order(doc)


DOCUMENT_NAME = "openapi.json"


def document_app(path: str) -> str | None:
    """The app id ``owner/app`` when ``path`` is ``/{owner}/{app}/openapi.json``, else None:
    the router answers that path from the app's spec, without a runner."""
    parts = path.split("/")
    if len(parts) == 4 and not parts[0] and parts[1] and parts[2] and parts[3] == DOCUMENT_NAME:
        return f"{parts[1]}/{parts[2]}"
    return None


def mark_order(doc: dict[str, Any]) -> dict[str, Any]:
    """Add fal's ``x-fal-order-paths`` and each schema's ``x-fal-order-properties``."""
    doc["x-fal-order-paths"] = list(doc.get("paths", {}))
    for schema in doc.get("components", {}).get("schemas", {}).values():
        _order_properties(schema)
    return doc


def _order_properties(schema: dict[str, Any]) -> None:
    for sub in schema.get("allOf", []):
        _order_properties(sub)
    if "properties" in schema:
        schema["x-fal-order-properties"] = list(schema["properties"])


def _model_operation(ep: EndpointSpec, schemas: dict[str, Any]) -> dict[str, Any]:
    """What FastAPI writes for ``@app.post(path) def name(body: In) -> Out``."""
    operation: dict[str, Any] = {
        "summary": ep.method_name.replace("_", " ").title(),
        "operationId": re.sub(r"\W", "_", f"{ep.method_name}{ep.path}") + "_post",
    }
    if ep.input_schema is not None:
        ref = _register(ep.input_schema, schemas)
        operation["requestBody"] = {
            "content": {"application/json": {"schema": ref}},
            "required": True,
        }
    output = _register(ep.output_schema, schemas) if ep.output_schema is not None else {}
    responses: dict[str, Any] = {
        "200": {
            "description": "Successful Response",
            "content": {"application/json": {"schema": output}},
        }
    }
    if ep.input_schema is not None:
        # Copies: the document is marked up afterwards (fal's order marks), the constants not.
        schemas["ValidationError"] = copy.deepcopy(VALIDATION_ERROR_SCHEMA)
        schemas["HTTPValidationError"] = copy.deepcopy(HTTP_VALIDATION_ERROR_SCHEMA)
        responses["422"] = {
            "description": "Validation Error",
            "content": {"application/json": {"schema": {"$ref": f"{REF}HTTPValidationError"}}},
        }
    operation["responses"] = responses
    return operation


def _register(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Move a model's schema (and its ``$defs``) into ``schemas``; return a ``$ref`` to it."""
    schema = _rebase(copy.deepcopy(schema))
    for name, sub in schema.pop("$defs", {}).items():
        schemas[name] = sub
    title = schema.get("title")
    if not isinstance(title, str):
        return schema
    schemas[title] = schema
    return {"$ref": f"{REF}{title}"}


def _rebase(node: Any) -> Any:
    """pydantic's ``#/$defs/X`` references as ``#/components/schemas/X``."""
    if isinstance(node, dict):
        return {
            k: (
                REF + v.removeprefix("#/$defs/")
                if k == "$ref" and isinstance(v, str)
                else _rebase(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rebase(v) for v in node]
    return node


def _websocket_protocol(ep: EndpointSpec) -> dict[str, Any]:
    """fal's ``x-fal-protocol`` entry for a websocket endpoint."""
    rt = ep.realtime
    if rt is None:
        return {
            "type": "websocket",
            "operationId": ep.method_name,
            "config": {"buffering": None, "sessionTimeout": None, "maxBatchSize": 1},
        }
    return {
        "type": "realtime",
        "operationId": ep.method_name,
        "config": {
            "buffering": rt.buffering,
            "sessionTimeout": rt.session_timeout,
            "maxBatchSize": rt.max_batch_size,
        },
        "contentType": rt.content_type,
        "realtimeMode": rt.mode,
    }


def _realtime_mirror(ep: EndpointSpec, schemas: dict[str, Any]) -> dict[str, Any]:
    """The POST fal lists beside a realtime endpoint, so that its frames' models show."""
    operation: dict[str, Any] = {
        "operationId": f"{ep.method_name}_post",
        "summary": f"Realtime endpoint: {ep.method_name}",
        "description": "",
    }
    if ep.input_schema is not None:
        ref = _register(ep.input_schema, schemas)
        operation["requestBody"] = {"content": {"application/json": {"schema": ref}}}
    if ep.output_schema is None:
        operation["responses"] = {"204": {"description": "WebSocket message response"}}
        return operation
    out = _register(ep.output_schema, schemas)
    operation["responses"] = {
        "200": {
            "description": "WebSocket message response",
            "content": {"application/json": {"schema": out}},
        }
    }
    return operation
