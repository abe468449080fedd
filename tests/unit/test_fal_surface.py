"""fal's App and endpoint surface that is not about fal's cloud: accepted, or refused by name."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from fastapi import Request, WebSocket
from pydantic import BaseModel, ValidationError

import yurt
from yurt.app import FAL_CLOUD_ONLY, FAL_REFUSED, SETTINGS, FalSettingIgnored
from yurt.signatures import style


class In(BaseModel):
    text: str


def make(attrs: dict[str, Any], **keywords: Any) -> type[yurt.App]:
    """An App with one endpoint, the given class attributes and class keywords."""

    def run(self: Any, body: In) -> In:
        return body

    namespace = {"run": yurt.endpoint("/")(run), **attrs}
    return type("Probe", (yurt.App,), namespace, **keywords)


@pytest.mark.parametrize("key", sorted(FAL_REFUSED.keys() - SETTINGS.keys()))
def test_refused_fal_settings_name_why(key: str) -> None:
    """A fal setting yurt does not take fails at class creation, as attribute or keyword."""
    with pytest.raises(yurt.AppDefinitionError, match=f"'{key}' is not supported by yurt"):
        make({key: ["x"]})
    with pytest.raises(yurt.AppDefinitionError, match=re.escape(FAL_REFUSED[key][:30])):
        make({}, **{key: ["x"]})


@pytest.mark.parametrize("key", sorted(FAL_CLOUD_ONLY.keys() - SETTINGS.keys()))
def test_fal_cloud_settings_are_accepted_with_a_warning(key: str) -> None:
    """A setting that only steers fal's cloud is accepted, and a warning says it does nothing."""
    with pytest.warns(FalSettingIgnored, match=f"'{key}' has no effect on yurt"):
        cls = make({}, **{key: ["us-east"]})
    assert yurt.build_spec(cls).app_name == "probe"


def test_version_and_health_hook() -> None:
    """``version`` is fal's label for health(); a near name stays the app's own attribute."""
    cls = make({"version": "1.2", "versions": ["a", "b"]})
    assert cls().health() == {"version": "1.2"}


def test_fastapi_style_whole_body_schema() -> None:
    """A FastAPI-style endpoint whose body is one model keeps that model as its input schema;
    one whose body embeds several parts, or has none, keeps none."""
    specs = {e.path: e for e in yurt.build_spec(Kinds).endpoints}
    assert specs["/request"].input_schema == In.model_json_schema()
    assert specs["/plain"].input_schema is None
    assert specs["/ws"].input_schema is None


def test_get_endpoints_and_openapi() -> None:
    """fal's App.get_endpoints lists the paths; App.openapi is the document the runner serves."""
    assert Kinds.get_endpoints() == ["/model", "/none", "/plain", "/request", "/ws"]
    doc = Kinds().openapi()
    assert doc["info"]["title"] == "kinds" and "/model" in doc["paths"]


def test_one_method_is_one_endpoint() -> None:
    """Decorating a method twice is refused, as in fal, naming the first path."""
    with pytest.raises(yurt.AppDefinitionError, match="already an endpoint at '/a'"):

        @yurt.endpoint("/b")
        @yurt.endpoint("/a")
        def run(self: Any, body: In) -> In:
            return body


def test_health_check_method_and_none_defaults() -> None:
    """HealthCheck takes fal's method= (GET or POST, any case) and None for any default."""
    assert yurt.HealthCheck(method="get").method == "GET"
    assert yurt.HealthCheck(method=None).method == "POST"
    none = yurt.HealthCheck(timeout_seconds=None, failure_threshold=None)
    assert none == yurt.HealthCheck()
    with pytest.raises(ValidationError):
        yurt.HealthCheck(method="PUT")


class Kinds(yurt.App):
    @yurt.endpoint("/none")
    def none(self) -> dict[str, str]:
        return {}

    @yurt.endpoint("/model")
    def model(self, body: In) -> In:
        return body

    @yurt.endpoint("/request")
    def request(self, body: In, request: Request) -> In:
        return body

    @yurt.endpoint("/plain")
    def plain(self, text: str) -> In:
        return In(text=text)

    @yurt.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        return None


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/none", "model"),
        ("/model", "model"),
        ("/request", "fastapi"),
        ("/plain", "fastapi"),
        ("/ws", "fastapi"),
    ],
)
def test_endpoint_kinds(path: str, kind: str) -> None:
    """No parameter or one model keeps the byte path; anything else is served by FastAPI."""
    ep = next(e for e in yurt.build_spec(Kinds).endpoints if e.path == path)
    assert ep.style == kind
    func = getattr(Kinds, ep.method_name)
    assert style(func, ep.method_name, is_websocket=ep.is_websocket) == kind


def test_model_style_apps_load_no_fastapi() -> None:
    """The runner's modules and a one-model App's spec load no FastAPI or starlette, so that
    such an app's cold start does not pay for them."""
    code = textwrap.dedent("""
        import json, sys
        import yurt
        from pydantic import BaseModel
        import yurt.runner.server, yurt.runner.endpoints, yurt.openapi
        class In(BaseModel):
            text: str
        class Echo(yurt.App):
            @yurt.endpoint("/")
            def run(self, body: In) -> In:
                return body
        yurt.openapi.document(yurt.build_spec(Echo))
        print(json.dumps(sorted(sys.modules)))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(out.stdout)
    assert "yurt.runner.server" in loaded
    assert [m for m in loaded if m.startswith(("fastapi", "starlette"))] == []
