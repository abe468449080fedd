"""Tests for ``yurt.App``: what a valid App class is, and the settings and defaults it carries."""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import WebSocket
from pydantic import BaseModel, Field, ValidationError

import yurt
from yurt.app import SETTINGS, default_app_name, unpickling_apps
from yurt.machines import known_machine_types


class In(BaseModel):
    """An endpoint's body."""

    text: str = Field(description="what to echo", examples=["hi"])


class Out(BaseModel):
    """An endpoint's answer."""

    text: str


def ep(path: str = "/", **marker: Any) -> Callable[..., Out]:
    """A fresh endpoint function at ``path`` (fresh, so that markers are never shared)."""

    @yurt.endpoint(path, **marker)
    def run(self: Any, req: In) -> Out:
        return Out(text=req.text)

    return run


def make_app(
    attrs: dict[str, Any] | None = None,
    *,
    name: str = "Echo",
    base: type[yurt.App] = yurt.App,
    **settings: Any,
) -> type[yurt.App]:
    """Create an App class named ``name`` with one endpoint at '/' plus ``attrs``.

    ``settings`` go in as class keyword arguments (``class Echo(yurt.App, keep_alive=30)``).
    """
    namespace: dict[str, Any] = {"__module__": __name__, "run": ep("/")}
    namespace |= attrs or {}
    return types.new_class(name, (base,), settings, lambda ns: ns.update(namespace))


def create(via: str, settings: dict[str, Any], **kw: Any) -> type[yurt.App]:
    """Create an App with ``settings`` as class attributes (``via='attr'``) or keywords."""
    if via == "attr":
        return make_app(settings, **kw)
    return make_app(**settings, **kw)


VIAS = pytest.mark.parametrize("via", ["attr", "kwarg"])


# -- settings that refuse the class ----------------------------------------------------------

BAD_SETTINGS = [
    # (id, settings, fragments the message must contain)
    ("unknown-machine", {"machine_type": "TPU-V5"}, ["'TPU-V5'", str(known_machine_types())]),
    (
        "unknown-machine-in-list",
        {"machine_type": ["GPU-H100", "GPU-X1"]},
        ["'GPU-X1'", str(known_machine_types())],
    ),
    ("empty-machine-list", {"machine_type": []}, ["non-empty list"]),
    ("machine-not-a-name", {"machine_type": 3}, ["machine_type 3"]),
    ("mixed-cpu-gpu", {"machine_type": ["CPU", "GPU-H100"]}, ["mixes CPU and GPU"]),
    ("mixed-gpu-cpu", {"machine_type": ["GPU-A100", "CPU"]}, ["mixes CPU and GPU"]),
    ("num-gpus-on-cpu", {"num_gpus": 1}, ["num_gpus=1", "pick a GPU machine type"]),
    ("zero-gpus-on-gpu", {"machine_type": "GPU-H100", "num_gpus": 0}, ["num_gpus >= 1"]),
    ("negative-gpus", {"machine_type": "GPU-H100", "num_gpus": -1}, ["non-negative integer"]),
    ("bool-gpus", {"machine_type": "GPU-H100", "num_gpus": True}, ["non-negative integer"]),
    ("float-gpus", {"machine_type": "GPU-H100", "num_gpus": 1.5}, ["non-negative integer"]),
    ("min-concurrency-negative", {"min_concurrency": -1}, ["min_concurrency=-1", ">= 0"]),
    ("buffer-negative", {"concurrency_buffer": -1}, ["concurrency_buffer=-1", ">= 0"]),
    (
        "buffer-perc-negative",
        {"concurrency_buffer_perc": -1},
        ["concurrency_buffer_perc=-1", ">= 0"],
    ),
    ("keep-alive-negative", {"keep_alive": -1}, ["keep_alive=-1", ">= 0"]),
    ("scaling-delay-negative", {"scaling_delay": -0.5}, ["scaling_delay=-0.5", ">= 0"]),
    (
        "grace-negative",
        {"termination_grace_period_seconds": -1},
        ["termination_grace_period_seconds=-1", ">= 0"],
    ),
    ("request-timeout-zero", {"request_timeout": 0}, ["request_timeout=0", ">= 0.001"]),
    ("startup-timeout-zero", {"startup_timeout": 0}, ["startup_timeout=0", ">= 0.001"]),
    ("max-concurrency-zero", {"max_concurrency": 0}, ["max_concurrency=0", ">= 1"]),
    ("max-multiplexing-zero", {"max_multiplexing": 0}, ["max_multiplexing=0", ">= 1"]),
    (
        "min-above-max",
        {"min_concurrency": 3, "max_concurrency": 2},
        ["min_concurrency=3", "max_concurrency=2", "raise max_concurrency"],
    ),
    ("buffer-perc-above-100", {"concurrency_buffer_perc": 101}, ["0..100"]),
    ("bool-for-int", {"max_concurrency": True}, ["max_concurrency=True", "an integer"]),
    ("bool-for-float", {"keep_alive": False}, ["keep_alive=False", "a number"]),
    ("float-for-int", {"min_concurrency": 1.5}, ["min_concurrency=1.5", "an integer"]),
    ("str-for-number", {"keep_alive": "60"}, ["keep_alive='60'", "a number"]),
    ("infinite-number", {"request_timeout": math.inf}, ["request_timeout=inf", "a number"]),
    ("nan-number", {"scaling_delay": math.nan}, ["scaling_delay=nan", "a number"]),
    ("skip-retry-unknown", {"skip_retry_conditions": ["nope"]}, ["'timeout'", "'server_error'"]),
    ("skip-retry-bare-string", {"skip_retry_conditions": "timeout"}, ["must be a list"]),
    ("bad-app-auth", {"app_auth": "secret"}, ["'secret'", "'private'", "'shared'"]),
    ("app-name-space", {"app_name": "my app"}, ["'my app'", "URL segment"]),
    ("app-name-slash", {"app_name": "a/b"}, ["'a/b'", "URL segment"]),
    ("app-name-not-str", {"app_name": 5}, ["5", "URL segment"]),
    ("app-name-empty", {"app_name": ""}, ["''", "URL segment"]),
    ("app-name-dot", {"app_name": "."}, ["'.'", "URL segment"]),
    ("app-name-dot-dot", {"app_name": ".."}, ["'..'", "URL segment"]),
    ("app-name-non-ascii", {"app_name": "caf\u00e9"}, ["URL segment"]),
    ("requirements-str", {"requirements": "torch"}, ["list of pip requirement strings"]),
    ("requirements-not-str", {"requirements": ["torch", 3]}, ["list of pip requirement strings"]),
]


@VIAS
@pytest.mark.parametrize(
    ("settings", "fragments"),
    [pytest.param(s, f, id=i) for i, s, f in BAD_SETTINGS],
)
def test_bad_setting_fails_at_class_creation(
    via: str, settings: dict[str, Any], fragments: list[str]
) -> None:
    """A bad setting raises AppDefinitionError naming the class, the value and the rule."""
    with pytest.raises(yurt.AppDefinitionError) as info:
        create(via, settings)
    message = str(info.value)
    assert message.startswith("Echo")
    for fragment in fragments:
        assert fragment in message


def test_app_definition_error_is_a_type_error() -> None:
    """AppDefinitionError is a YurtError and a TypeError (a bad class is a type mistake)."""
    with pytest.raises(TypeError):
        make_app(max_concurrency=0)
    assert issubclass(yurt.AppDefinitionError, yurt.YurtError)


def test_overriding_init_is_refused_with_setup_hint() -> None:
    """Overriding __init__ fails at class creation and the message points to setup()."""

    def __init__(self: Any) -> None:
        pass

    with pytest.raises(yurt.AppDefinitionError, match=r"Echo overrides __init__.*setup\(\)"):
        make_app({"__init__": __init__})


def test_unknown_class_keyword_is_refused() -> None:
    """An unknown class keyword names itself and lists the known settings."""
    with pytest.raises(yurt.AppDefinitionError) as info:
        make_app(keepalive=30, colour="red")
    message = str(info.value)
    assert "['colour', 'keepalive']" in message
    assert str(sorted(SETTINGS)) in message
    assert "'keepalive' -> 'keep_alive'" in message


@pytest.mark.parametrize(
    "attrs",
    [
        {"model_path": "/models/x"},
        {"model_id": "org/model"},
        {"timeout": 5},
        {"_keep_alvie": 1},  # private names are the class's own
        {"keep_alives": lambda self: 1},  # a method, however named
        {"num_gpu": property(lambda self: 1)},
    ],
)
def test_unknown_class_attribute_is_left_alone(attrs: dict[str, Any]) -> None:
    """Class attributes that are not settings, nor one typo from one, are the user's own."""
    cls = make_app(attrs)
    assert all(key in vars(cls) for key in attrs)


@pytest.mark.parametrize(
    ("attr", "setting"),
    [
        ("keep_alvie", "keep_alive"),
        ("keepalive", "keep_alive"),
        ("num_gpu", "num_gpus"),
        ("requirement", "requirements"),
        ("max_concurrent", "max_concurrency"),
        ("machine_types", "machine_type"),
    ],
)
def test_near_miss_setting_attribute_is_refused(attr: str, setting: str) -> None:
    """A class attribute one typo from a setting fails at class creation, naming the setting."""
    with pytest.raises(yurt.AppDefinitionError, match=rf"'{attr}'.*did you mean '{setting}'"):
        make_app({attr: 10})


def test_near_miss_setting_in_a_base_class_is_refused() -> None:
    """A misspelt setting inherited from a base App is caught in the subclass too."""
    with unpickling_apps():  # a base that skipped its own check, as a payload's classes do
        base = make_app({"keep_alvie": 10}, name="Base")
    with pytest.raises(yurt.AppDefinitionError, match="did you mean 'keep_alive'"):
        make_app(name="Child", base=base)


# -- endpoints that refuse the class ---------------------------------------------------------


class NotAModel:
    """A plain class: neither a pydantic model nor a type FastAPI can read from a request."""


def _endpoints_unservable() -> dict[str, Any]:
    @yurt.endpoint("/")
    def run(self: Any, req: NotAModel, other: In) -> Out:
        return Out(text="")

    return {"run": run}


def _endpoints_sync_websocket() -> dict[str, Any]:
    @yurt.endpoint("/ws", is_websocket=True)
    def run(self: Any, websocket: WebSocket) -> None:
        return None

    return {"run": run}


def _endpoints_websocket_without_socket() -> dict[str, Any]:
    @yurt.endpoint("/ws", is_websocket=True)
    async def run(self: Any, req: In) -> None:
        return None

    return {"run": run}


def _endpoints_websocket_health_check() -> dict[str, Any]:
    @yurt.endpoint("/ws", is_websocket=True, health_check=yurt.HealthCheck())
    async def run(self: Any, websocket: WebSocket) -> None:
        return None

    return {"run": run}


def _endpoints_duplicate_path() -> dict[str, Any]:
    return {"run": ep("/same"), "again": ep("/same")}


def _endpoints_duplicate_after_normalizing() -> dict[str, Any]:
    return {"run": ep("/a"), "again": ep("/a/")}


def _endpoints_two_health_checks() -> dict[str, Any]:
    return {
        "run": ep("/a", health_check=yurt.HealthCheck()),
        "again": ep("/b", health_check=yurt.HealthCheck()),
    }


def _endpoints_none() -> dict[str, Any]:
    return {"run": lambda self: None}


def _endpoints_unresolvable() -> dict[str, Any]:
    @yurt.endpoint("/")
    def run(self: Any, req: NotDefinedAnywhere) -> Out:  # type: ignore[name-defined]  # noqa: F821
        return Out(text="")

    return {"run": run}


@pytest.mark.parametrize(
    ("make_endpoints", "fragments"),
    [
        pytest.param(
            _endpoints_unservable, ["Echo.run", "FastAPI cannot serve", "pydantic"], id="unservable"
        ),
        pytest.param(
            _endpoints_sync_websocket, ["Echo.run", "must be defined with async def"], id="sync-ws"
        ),
        pytest.param(
            _endpoints_websocket_without_socket,
            ["Echo.run", "take a parameter annotated fastapi.WebSocket"],
            id="ws-without-socket",
        ),
        pytest.param(
            _endpoints_websocket_health_check,
            ["Echo.run", "cannot carry a health_check"],
            id="ws-health-check",
        ),
        pytest.param(
            _endpoints_duplicate_path,
            ["'run'", "'again'", "'/same'", "own path"],
            id="duplicate-path",
        ),
        pytest.param(
            _endpoints_duplicate_after_normalizing, ["'/a'", "own path"], id="duplicate-slash"
        ),
        pytest.param(
            _endpoints_two_health_checks,
            ["['/a', '/b']", "keep it on one endpoint"],
            id="two-health-checks",
        ),
        pytest.param(_endpoints_none, ["no endpoints", "@yurt.endpoint"], id="no-endpoints"),
        pytest.param(
            _endpoints_unresolvable,
            ["Echo.run", "cannot resolve", "at module level"],
            id="unresolvable-annotation",
        ),
    ],
)
def test_bad_endpoints_fail_at_class_creation(
    make_endpoints: Callable[[], dict[str, Any]], fragments: list[str]
) -> None:
    """An invalid set of endpoints raises AppDefinitionError naming the method and the fix."""
    with pytest.raises(yurt.AppDefinitionError) as info:
        make_app(make_endpoints())
    for fragment in fragments:
        assert fragment in str(info.value)


def test_endpoint_without_parentheses_says_so() -> None:
    """``@yurt.endpoint`` used bare on a method fails at class creation naming the fix."""

    def body() -> None:
        class Bare(yurt.App):
            @yurt.endpoint  # type: ignore[arg-type]
            def run(self, req: In) -> Out:
                return Out(text=req.text)

    with pytest.raises(yurt.AppDefinitionError, match=r"'run' has no parentheses.*endpoint\('/'\)"):
        body()


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("run", "must be a string starting with '/'"),
        ("", "must be a string starting with '/'"),
        (None, "must be a string starting with '/'"),
        ("/_yurt", "reserved"),
        ("/_yurt/health", "reserved"),
        ("//_yurt/health", "reserved"),
        ("/_yurt/", "reserved"),
    ],
)
def test_bad_endpoint_path_is_refused(path: Any, fragment: str) -> None:
    """@endpoint refuses a path not starting with '/' and any path under /_yurt."""
    with pytest.raises(yurt.AppDefinitionError, match=fragment):
        yurt.endpoint(path)


@pytest.mark.parametrize(
    ("path", "normalized"),
    [("/", "/"), ("/run", "/run"), ("/run/", "/run"), ("/a/b/", "/a/b"), ("//x//", "/x")],
)
def test_endpoint_path_is_normalized(path: str, normalized: str) -> None:
    """Leading and trailing slashes collapse; the root path stays '/'."""
    cls = make_app({"run": ep(path)})
    assert [e.path for e in yurt.build_spec(cls).endpoints] == [normalized]


# -- settings that land in the spec ----------------------------------------------------------

GOOD_SETTINGS = [
    # (setting, value, spec field, expected spec value)
    ("app_name", "echo-v2", "app_name", "echo-v2"),
    ("app_auth", "private", "app_auth", "private"),
    ("app_auth", "shared", "app_auth", "shared"),
    ("machine_type", "GPU-H100", "machine_types", ["GPU-H100"]),
    ("machine_type", ["GPU-H200", "GPU-A100"], "machine_types", ["GPU-H200", "GPU-A100"]),
    ("requirements", ["torch==2.3", "numpy"], "requirements", ["torch==2.3", "numpy"]),
    ("min_concurrency", 1, "min_concurrency", 1),
    ("max_concurrency", 7, "max_concurrency", 7),
    ("concurrency_buffer", 2, "concurrency_buffer", 2),
    ("concurrency_buffer_perc", 100, "concurrency_buffer_perc", 100),
    ("scaling_delay", 4, "scaling_delay", 4.0),
    ("max_multiplexing", 8, "max_multiplexing", 8),
    ("keep_alive", 0, "keep_alive", 0.0),
    ("keep_alive", 30, "keep_alive", 30.0),
    ("request_timeout", 1.5, "request_timeout", 1.5),
    ("startup_timeout", 30, "startup_timeout", 30.0),
    ("termination_grace_period_seconds", 0, "termination_grace_period_seconds", 0.0),
    ("skip_retry_conditions", ["timeout"], "skip_retry_conditions", ["timeout"]),
    (
        "skip_retry_conditions",
        ("server_error", "connection_error"),
        "skip_retry_conditions",
        ["server_error", "connection_error"],
    ),
    ("skip_retry_conditions", [], "skip_retry_conditions", []),
]


@VIAS
@pytest.mark.parametrize(("key", "value", "field", "expected"), GOOD_SETTINGS)
def test_setting_lands_in_spec(via: str, key: str, value: Any, field: str, expected: Any) -> None:
    """A setting given as a class attribute or as a class keyword lands in the AppSpec."""
    cls = create(via, {key: value})
    assert getattr(yurt.build_spec(cls), field) == expected


def test_class_keyword_becomes_class_attribute() -> None:
    """A class keyword setting is readable as a class attribute afterwards."""
    cls = make_app(keep_alive=12, max_concurrency=4)
    assert (cls.keep_alive, cls.max_concurrency) == (12, 4)


def test_class_keyword_wins_over_class_attribute() -> None:
    """When a setting is both an attribute and a keyword, the keyword wins."""
    cls = make_app({"keep_alive": 5}, keep_alive=9)
    assert yurt.build_spec(cls).keep_alive == 9.0


DEFAULTS = {
    "app_auth": "private",
    "machine_types": ["CPU"],
    "num_gpus": 0,
    "requirements": [],
    "min_concurrency": 0,
    "max_concurrency": 2,
    "concurrency_buffer": 0,
    "concurrency_buffer_perc": 0,
    "scaling_delay": 0.0,
    "max_multiplexing": 1,
    "keep_alive": 60.0,
    "request_timeout": 3600.0,
    "startup_timeout": 600.0,
    "termination_grace_period_seconds": 5.0,
    "skip_retry_conditions": [],
}


@pytest.mark.parametrize(("field", "expected"), DEFAULTS.items(), ids=list(DEFAULTS))
def test_defaults_match_the_semantics_table(field: str, expected: Any) -> None:
    """An App that sets nothing gets the defaults of the platform's App attributes table."""
    assert getattr(yurt.build_spec(make_app()), field) == expected


@pytest.mark.parametrize("machine", [m for m in known_machine_types() if m.startswith("GPU")])
def test_gpu_machine_defaults_to_one_gpu(machine: str) -> None:
    """num_gpus defaults to 1 on every GPU machine type."""
    assert yurt.build_spec(make_app(machine_type=machine)).num_gpus == 1


@pytest.mark.parametrize("machine", ["GPU-H100", ["GPU-H100", "GPU-A100"]])
def test_explicit_num_gpus_on_gpu_machine(machine: str | list[str]) -> None:
    """An explicit num_gpus on a GPU machine type is kept."""
    assert yurt.build_spec(make_app(machine_type=machine, num_gpus=4)).num_gpus == 4


@pytest.mark.parametrize(
    ("class_name", "app_name"),
    [
        ("MyGoodApp", "my-good-app"),
        ("BiRefNetRMBG", "bi-ref-net-r-m-b-g"),
        ("HTTPServer", "h-t-t-p-server"),
        ("ONNXModel", "o-n-n-x-model"),
        ("Echo", "echo"),
        ("SlowSetup", "slow-setup"),
        ("Model2Text", "model-text"),
        ("GreeterV1", "greeter-v"),
        ("lower", "lower"),
        ("mock_model", "mock-model"),
        ("myApp", "app"),
    ],
)
def test_app_name_defaults_to_fals_name(class_name: str, app_name: str) -> None:
    """app_name defaults to the name fal derives from the class name, so fal's URLs work."""
    assert default_app_name(class_name) == app_name
    assert yurt.build_spec(make_app(name=class_name)).app_name == app_name


def test_name_class_keyword_sets_app_name() -> None:
    """fal's ``class A(App, name="...")`` names the app."""
    cls = types.new_class(
        "Echo", (yurt.App,), {"name": "my-echo"}, lambda ns: ns.update(run=ep("/"))
    )
    assert cls.app_name == "my-echo"
    assert yurt.build_spec(cls).app_name == "my-echo"


def test_name_keyword_and_other_app_name_are_refused() -> None:
    """``name=`` and a different ``app_name`` (attribute or keyword) is a mistake, not a choice."""
    with pytest.raises(yurt.AppDefinitionError, match=r"'a'.*'b' disagree"):
        types.new_class(
            "Echo", (yurt.App,), {"name": "a"}, lambda ns: ns.update(run=ep("/"), app_name="b")
        )
    with pytest.raises(yurt.AppDefinitionError, match=r"'a'.*'b' disagree"):
        types.new_class(
            "Echo", (yurt.App,), {"name": "a", "app_name": "b"}, lambda ns: ns.update(run=ep("/"))
        )


@pytest.mark.parametrize("app_name", ["echo", "Echo_2", "my.app", "a-b"])
def test_valid_app_names_are_kept(app_name: str) -> None:
    """app_name may use letters, digits, '-', '_' and '.'."""
    assert yurt.build_spec(make_app(app_name=app_name)).app_name == app_name


# -- inheritance -----------------------------------------------------------------------------


def test_subclass_inherits_settings_and_endpoints() -> None:
    """A subclass keeps its parent's settings and endpoints and adds its own."""
    parent = make_app({"keep_alive": 30}, name="Parent", max_concurrency=5)
    child = make_app({"run2": ep("/two")}, name="Child", base=parent, min_concurrency=1)
    spec = yurt.build_spec(child)
    assert (spec.keep_alive, spec.max_concurrency, spec.min_concurrency) == (30.0, 5, 1)
    assert [(e.path, e.method_name) for e in spec.endpoints] == [("/", "run"), ("/two", "run2")]
    assert spec.app_name == "child"
    # The child's keywords do not leak into the parent.
    assert yurt.build_spec(parent).min_concurrency == 0


def test_subclass_overriding_endpoint_moves_its_path() -> None:
    """Redefining an endpoint method in a subclass replaces the parent's path for it."""
    parent = make_app(name="Parent")
    child = make_app({"run": ep("/moved")}, name="Child", base=parent)
    assert [e.path for e in yurt.build_spec(child).endpoints] == ["/moved"]


def test_subclass_new_method_on_taken_path_is_refused() -> None:
    """A subclass method on a path its parent already uses is a duplicate."""
    parent = make_app(name="Parent")
    with pytest.raises(yurt.AppDefinitionError, match="both use path '/'"):
        make_app({"other": ep("/")}, name="Child", base=parent)


def test_subclass_is_validated_too() -> None:
    """A subclass that breaks a rule fails even when its parent was valid."""
    parent = make_app(name="Parent")
    with pytest.raises(yurt.AppDefinitionError, match="max_multiplexing=0"):
        make_app(name="Child", base=parent, max_multiplexing=0)


# -- unpickling and HealthCheck ----------------------------------------------------------------


def test_unpickling_context_skips_validation() -> None:
    """Inside unpickling_apps() classes are created unvalidated; outside, validation is back."""
    with unpickling_apps():
        cls = make_app({"run": lambda self: None}, max_concurrency=0)
    assert issubclass(cls, yurt.App)
    with pytest.raises(yurt.AppDefinitionError):
        make_app({"run": lambda self: None})


def test_unpickling_context_still_refuses_unknown_keywords() -> None:
    """Unknown class keywords are refused even while unpickling (cloudpickle passes none)."""
    with unpickling_apps(), pytest.raises(yurt.AppDefinitionError, match="unknown App setting"):
        make_app(colour="red")


def test_health_check_defaults() -> None:
    """HealthCheck defaults: 30 s start period, 5 s timeout, 3 failures, called regularly."""
    hc = yurt.HealthCheck()
    assert (hc.start_period_seconds, hc.timeout_seconds, hc.failure_threshold) == (30, 5, 3)
    assert hc.call_regularly is True


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_period_seconds": -1},
        {"timeout_seconds": 0},
        {"failure_threshold": 0},
        {"interval": 3},
    ],
)
def test_health_check_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    """HealthCheck refuses negative periods, a zero timeout or threshold, and unknown keys."""
    with pytest.raises(ValidationError):
        yurt.HealthCheck(**kwargs)


def test_setup_and_teardown_default_to_no_ops() -> None:
    """The base setup() and teardown() do nothing and return None."""
    instance = make_app()()
    assert instance.setup() is None
    assert instance.teardown() is None
