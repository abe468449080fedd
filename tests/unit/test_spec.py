"""Tests for ``yurt.spec``: the AppSpec that build_spec derives from an App class."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from fastapi import WebSocket
from pydantic import BaseModel, Field

import yurt
from yurt.loader import load_app
from yurt.spec import AppSpec, EndpointSpec


class Prompt(BaseModel):
    """A body with documented fields."""

    prompt: str = Field(description="what to draw", examples=["a yurt at dawn"])
    steps: int = Field(default=20, description="diffusion steps", examples=[20, 50])


class Image(BaseModel):
    """An answer."""

    image_url: str = Field(description="where the image is")


class Gallery(yurt.App, machine_type=["GPU-H200", "GPU-A100", "GPU-H100"], keep_alive=30):
    """An App exercising every kind of endpoint."""

    skip_retry_conditions = ["timeout"]

    @yurt.endpoint("/")
    def draw(self, req: Prompt) -> Image:
        return Image(image_url=req.prompt)

    @yurt.endpoint("/async")
    async def draw_async(self, req: Prompt) -> Image:
        return Image(image_url=req.prompt)

    @yurt.endpoint("/health", health_check=yurt.HealthCheck(start_period_seconds=1))
    def health(self) -> dict[str, bool]:
        return {"ok": True}

    @yurt.endpoint("/realtime", is_websocket=True)
    async def realtime(self, websocket: WebSocket) -> None:
        return None


@pytest.fixture
def spec() -> AppSpec:
    """The spec of Gallery."""
    return yurt.build_spec(Gallery)


def by_path(spec: AppSpec, path: str) -> EndpointSpec:
    """The endpoint of ``spec`` at ``path``."""
    return next(e for e in spec.endpoints if e.path == path)


def test_machine_type_list_keeps_its_order(spec: AppSpec) -> None:
    """A machine_type list is kept in the order given (fallbacks in order)."""
    assert spec.machine_types == ["GPU-H200", "GPU-A100", "GPU-H100"]


def test_machine_type_tuple_becomes_a_list() -> None:
    """A machine_type tuple is accepted and stored as a list in the same order."""

    class Tupled(yurt.App, machine_type=("GPU-B200", "GPU-H100")):
        @yurt.endpoint("/")
        def run(self) -> None:
            return None

    assert yurt.build_spec(Tupled).machine_types == ["GPU-B200", "GPU-H100"]


def test_spec_names_the_class(spec: AppSpec) -> None:
    """The spec records the class name and the default app name (fal's rule)."""
    assert (spec.class_name, spec.app_name) == ("Gallery", "gallery")


@pytest.mark.parametrize(
    ("path", "method_name", "is_async"),
    [
        ("/", "draw", False),
        ("/async", "draw_async", True),
        ("/health", "health", False),
        ("/realtime", "realtime", True),
    ],
)
def test_sync_and_async_endpoints_are_told_apart(
    spec: AppSpec, path: str, method_name: str, is_async: bool
) -> None:
    """Each endpoint records its method and whether it is a coroutine function."""
    endpoint = by_path(spec, path)
    assert (endpoint.method_name, endpoint.is_async) == (method_name, is_async)


def test_endpoints_are_sorted_by_path(spec: AppSpec) -> None:
    """Endpoints are listed in path order, whatever the order in the class body."""
    assert [e.path for e in spec.endpoints] == ["/", "/async", "/health", "/realtime"]
    assert spec.paths == frozenset({"/", "/async", "/health", "/realtime"})


def test_input_schema_carries_field_docs(spec: AppSpec) -> None:
    """The input JSON schema is the body model's, with Field descriptions and examples."""
    schema = by_path(spec, "/").input_schema
    assert schema == Prompt.model_json_schema()
    assert schema is not None
    assert schema["properties"]["prompt"]["description"] == "what to draw"
    assert schema["properties"]["prompt"]["examples"] == ["a yurt at dawn"]
    assert schema["properties"]["steps"]["examples"] == [20, 50]
    assert schema["required"] == ["prompt"]


def test_output_schema_is_the_return_model(spec: AppSpec) -> None:
    """The output JSON schema is the return annotation's model."""
    assert by_path(spec, "/").output_schema == Image.model_json_schema()


def test_endpoint_without_body_or_model_return(spec: AppSpec) -> None:
    """An endpoint with no body parameter and a non-model return has no schemas."""
    health = by_path(spec, "/health")
    assert (health.input_schema, health.output_schema) == (None, None)


def test_health_check_and_websocket_flags(spec: AppSpec) -> None:
    """health_check and is_websocket flow from @endpoint into the spec."""
    assert spec.health_check is not None
    assert spec.health_check.path == "/health"
    assert spec.health_check.health_check == yurt.HealthCheck(start_period_seconds=1)
    assert by_path(spec, "/realtime").is_websocket is True
    assert by_path(spec, "/").is_websocket is False


def test_no_health_check() -> None:
    """An App without a health check has spec.health_check None."""

    class Plain(yurt.App):
        @yurt.endpoint("/")
        def run(self) -> None:
            return None

    assert yurt.build_spec(Plain).health_check is None


def test_spec_round_trips_through_json(spec: AppSpec) -> None:
    """model_dump_json -> model_validate_json gives an equal AppSpec."""
    assert AppSpec.model_validate_json(spec.model_dump_json()) == spec


def test_spec_is_frozen(spec: AppSpec) -> None:
    """An AppSpec cannot be changed after it is built."""
    with pytest.raises(ValueError, match="frozen"):
        spec.keep_alive = 1.0  # type: ignore[misc]


def test_build_spec_is_repeatable(spec: AppSpec) -> None:
    """build_spec of the same class twice gives equal specs (it is pure)."""
    assert yurt.build_spec(Gallery) == spec


def test_settings_from_attributes_and_keywords(spec: AppSpec) -> None:
    """Class keywords and class attributes of one class both land in its spec."""
    assert (spec.keep_alive, spec.skip_retry_conditions, spec.num_gpus) == (30.0, ["timeout"], 1)


def test_spec_from_a_future_annotations_module(tmp_path: Path, isolated_imports: None) -> None:
    """A module with ``from __future__ import annotations`` yields schemas and real annotations."""
    source = textwrap.dedent(
        """
        from __future__ import annotations

        from pydantic import BaseModel, Field

        import yurt


        class Query(BaseModel):
            text: str = Field(description="the question", examples=["why?"])


        class Answer(BaseModel):
            text: str


        class Oracle(yurt.App):
            @yurt.endpoint("/")
            async def ask(self, req: Query) -> Answer:
                return Answer(text=req.text)
        """
    )
    (tmp_path / "future_oracle.py").write_text(source)
    cls = load_app(str(tmp_path / "future_oracle.py"))
    module = sys.modules[cls.__module__]
    endpoint = yurt.build_spec(cls).endpoints[0]
    assert endpoint.is_async is True
    assert endpoint.input_schema == module.Query.model_json_schema()
    assert endpoint.input_schema["properties"]["text"]["examples"] == ["why?"]
    assert endpoint.output_schema == module.Answer.model_json_schema()
    # The resolved models replace the strings, so a pickled function needs no module globals.
    assert cls.ask.__annotations__["req"] is module.Query
    assert cls.ask.__annotations__["return"] is module.Answer


def test_build_spec_refuses_a_class_mutated_after_creation() -> None:
    """build_spec re-validates: a class made invalid after creation fails when specced."""
    cls: Any = types.new_class(
        "Mutable", (yurt.App,), {}, lambda ns: ns.update(run=yurt.endpoint("/")(lambda self: 1))
    )
    cls.max_concurrency = 0
    with pytest.raises(yurt.AppDefinitionError, match="max_concurrency=0"):
        yurt.build_spec(cls)
