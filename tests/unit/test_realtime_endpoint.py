"""Tests for ``@yurt.realtime``: the mode read off the annotations, its models, and refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

import yurt
from yurt.errors import AppDefinitionError
from yurt.realtime_endpoint import realtime_of
from yurt.spec import build_spec


class In(BaseModel):
    """A realtime input."""

    prompt: str


class Out(BaseModel):
    """A realtime output."""

    text: str


def test_unary_reads_models_and_marks_a_websocket_endpoint() -> None:
    """A plain In -> Out method is unary, served as a websocket endpoint with both schemas."""

    class Rt(yurt.App):
        @yurt.realtime("/realtime", buffering=2, session_timeout=5)
        def draw(self, input: In) -> Out:
            return Out(text=input.prompt)

    rt = realtime_of(Rt.draw)
    assert rt is not None
    assert (rt.settings.mode, rt.input_model, rt.output_model) == ("unary", In, Out)
    (ep,) = build_spec(Rt).endpoints
    assert (ep.path, ep.is_websocket, ep.method_name) == ("/realtime", True, "draw")
    assert ep.realtime is not None
    assert (ep.realtime.buffering, ep.realtime.session_timeout) == (2, 5.0)
    assert ep.input_schema == In.model_json_schema()
    assert ep.output_schema == Out.model_json_schema()


def _mode(func: Any) -> str:
    rt = realtime_of(yurt.realtime("/realtime")(func))
    assert rt is not None
    return rt.settings.mode


def test_modes_follow_the_annotations_as_fal_reads_them() -> None:
    """AsyncIterator/Iterator annotations pick server, client or bidi streaming, as in fal."""

    async def server(self: Any, input: In) -> AsyncIterator[Out]:
        yield Out(text="")

    def server_sync(self: Any, input: In) -> Iterator[Out]:
        yield Out(text="")

    async def client(self: Any, inputs: AsyncIterator[In]) -> Out:
        return Out(text="")

    async def bidi(self: Any, inputs: AsyncIterator[In]) -> AsyncIterator[Out]:
        yield Out(text="")

    async def unary(self: Any, input: In) -> Out:
        return Out(text="")

    modes = [_mode(f) for f in (server, server_sync, client, bidi, unary)]
    assert modes == ["server_streaming", "server_streaming", "client_streaming", "bidi", "unary"]


def test_streamed_item_types_are_the_models() -> None:
    """The item type of a stream annotation is the input or output model."""

    async def bidi(self: Any, inputs: AsyncIterator[In]) -> AsyncIterator[Out]:
        yield Out(text="")

    rt = realtime_of(yurt.realtime("/realtime")(bidi))
    assert rt is not None
    assert (rt.input_model, rt.output_model) == (In, Out)


def test_dict_and_explicit_none_modal_take_raw_maps() -> None:
    """A dict annotation, or input_modal=None, hands the endpoint the decoded map itself."""

    def raw(self: Any, input: dict[str, Any]) -> dict[str, Any]:
        return input

    def overridden(self: Any, input: In) -> Out:
        return Out(text="")

    assert realtime_of(yurt.realtime("/r")(raw)).input_model is None  # type: ignore[union-attr]
    over = realtime_of(yurt.realtime("/r", input_modal=None)(overridden))
    assert over is not None and over.input_model is None and over.output_model is Out


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"buffering": 0}, "buffering=0"),
        ({"buffering": 1.5}, "buffering=1.5"),
        ({"session_timeout": 0}, "session_timeout=0"),
        ({"session_timeout": True}, "session_timeout=True"),
        ({"max_batch_size": 0}, "max_batch_size=0"),
    ],
)
def test_bad_knobs_are_refused_naming_them(options: dict[str, Any], needle: str) -> None:
    """Out-of-range knobs fail at decoration, naming the value."""

    def f(self: Any, input: In) -> Out:
        return Out(text="")

    with pytest.raises(AppDefinitionError, match=needle):
        yurt.realtime("/realtime", **options)(f)


def test_bare_decorator_names_the_fix() -> None:
    """``@yurt.realtime`` without parentheses says to give the path."""
    with pytest.raises(AppDefinitionError, match=r"@yurt.realtime\('/realtime'\)"):

        @yurt.realtime  # type: ignore[arg-type]
        def f(self: Any, input: In) -> Out:
            return Out(text="")


def _refused(func: Any, **options: Any) -> str:
    with pytest.raises(AppDefinitionError) as info:
        yurt.realtime("/realtime", **options)(func)
    return str(info.value)


def test_shapes_that_cannot_run_are_refused() -> None:
    """Mistakes fal would only hit mid-session fail at class creation, naming the fix."""

    def no_input(self: Any) -> Out:
        return Out(text="")

    def sync_client(self: Any, inputs: AsyncIterator[In]) -> Out:
        return Out(text="")

    async def unannotated_gen(self: Any, input: In):  # type: ignore[no-untyped-def]
        yield Out(text="")

    def str_in(self: Any, input: str) -> Out:
        return Out(text="")

    def one_input(self: Any, input: In) -> Out:
        return Out(text="")

    async def server(self: Any, input: In) -> AsyncIterator[Out]:
        yield Out(text="")

    assert "takes no input" in _refused(no_input)
    assert "must be 'async def'" in _refused(sync_client)
    assert "AsyncIterator[Output]" in _refused(unannotated_gen)
    assert "pydantic BaseModel" in _refused(str_in)
    assert "*inputs" in _refused(one_input, max_batch_size=4)
    assert "drop max_batch_size" in _refused(server, max_batch_size=2)


def test_batching_endpoint_with_varargs_is_accepted() -> None:
    """``*inputs`` with input_modal takes batches of models."""

    def batch(self: Any, *inputs: In) -> Out:
        return Out(text="")

    rt = realtime_of(yurt.realtime("/r", max_batch_size=4, input_modal=In)(batch))
    assert rt is not None and rt.input_model is In and rt.settings.max_batch_size == 4


def test_endpoint_and_realtime_together_are_refused() -> None:
    """One method is one endpoint: @endpoint under @realtime is refused."""

    def f(self: Any, input: In) -> Out:
        return Out(text="")

    with pytest.raises(AppDefinitionError, match="not both"):
        yurt.realtime("/realtime")(yurt.endpoint("/")(f))


def test_realtime_beside_http_endpoints_and_path_clash() -> None:
    """A realtime path is an endpoint path: beside others fine, on a taken path refused."""

    class Both(yurt.App):
        @yurt.endpoint("/")
        def run(self, input: In) -> Out:
            return Out(text=input.prompt)

        @yurt.realtime("/realtime")
        def live(self, input: In) -> Out:
            return Out(text=input.prompt)

    assert build_spec(Both).paths == {"/", "/realtime"}
    with pytest.raises(AppDefinitionError, match="both use path '/realtime'"):

        class Clash(yurt.App):
            @yurt.endpoint("/realtime")
            def run(self, input: In) -> Out:
                return Out(text=input.prompt)

            @yurt.realtime("/realtime")
            def live(self, input: In) -> Out:
                return Out(text=input.prompt)


def test_openapi_describes_a_realtime_endpoint_as_fal_publishes_it() -> None:
    """x-fal-protocol says realtime with its mode and knobs; a mirror POST shows the models."""
    from yurt.openapi import document

    class Rt(yurt.App):
        @yurt.realtime("/realtime", buffering=2, session_timeout=30, max_batch_size=2)
        def draw(self, *inputs: In) -> Out:
            return Out(text="")

    doc = document(build_spec(Rt))
    entry = doc["paths"]["/realtime"]
    assert entry["x-fal-protocol"] == {
        "type": "realtime",
        "operationId": "draw",
        "config": {"buffering": 2, "sessionTimeout": 30.0, "maxBatchSize": 2},
        "contentType": "application/msgpack",
        "realtimeMode": "unary",
    }
    assert entry["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Out"
    }
    assert "requestBody" not in entry["post"]  # *inputs without input_modal: plain maps
    assert doc["components"]["schemas"]["Out"]["properties"] == {
        "text": {"title": "Text", "type": "string"}
    }
