"""``AppSpec``: the one description of an App that everything downstream reads.

``build_spec`` is pure: it reads the class and nothing else (no clock, no environment, no I/O),
and it is where every rule about a valid App lives, so that ``AppDefinitionError`` names the
attribute and the fix at class creation.
"""

from __future__ import annotations

import inspect
import math
import re
import typing
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from yurt import signatures
from yurt.app import (
    ENDPOINT_ATTR,
    SETTINGS,
    App,
    EndpointMarker,
    HealthCheck,
    default_app_name,
    near_setting,
)
from yurt.errors import AppDefinitionError
from yurt.machines import ALIASES, CATALOG, known_machine_types
from yurt.realtime_endpoint import RealtimeSettings, realtime_of
from yurt.signatures import EndpointStyle

RetryCondition = Literal["timeout", "server_error", "connection_error"]
RETRY_CONDITIONS: tuple[str, ...] = typing.get_args(RetryCondition)
APP_AUTH = ("private", "public", "shared")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Seconds a stopping runner has for teardown() after the grace period, before its supervisor
# (the local backend's kill_after, Nomad's KillTimeout) sends SIGKILL.
TEARDOWN_SLACK_S = 5.0


class EndpointSpec(BaseModel):
    """One endpoint: where it answers and what it takes and returns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    method_name: str
    is_async: bool
    is_websocket: bool = False
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    health_check: HealthCheck | None = None
    # "model": one pydantic body (or none), served on the runner's byte path; "fastapi":
    # FastAPI parameters or a websocket, served by FastAPI in the runner (yurt.signatures).
    style: EndpointStyle = "model"
    # For a "fastapi" endpoint, FastAPI's OpenAPI ``paths`` and component ``schemas`` for it.
    openapi: dict[str, Any] | None = None
    # A ``@yurt.realtime`` endpoint's mode and knobs; its schemas are its input and output's.
    realtime: RealtimeSettings | None = None


class AppSpec(BaseModel):
    """Everything the router, scheduler and backends need to know about an App."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_name: str
    class_name: str
    app_auth: Literal["private", "public", "shared"]
    machine_types: list[str]
    num_gpus: int
    requirements: list[str] | list[list[str]]
    # Modules shipped by value with the payload although not beside the app file (fal's name).
    local_python_modules: list[str] = []
    min_concurrency: int
    max_concurrency: int
    concurrency_buffer: int
    concurrency_buffer_perc: int
    scaling_delay: float
    max_multiplexing: int
    keep_alive: float
    request_timeout: float
    startup_timeout: float
    termination_grace_period_seconds: float
    skip_retry_conditions: list[RetryCondition]
    endpoints: list[EndpointSpec]
    # Last and with a default: deployments saved before it existed still load.
    required_secrets: list[str] = []
    image: str | None = None  # the docker driver's image for this app (Nomad)
    fork_runners: bool = True  # runners forked from a warm template (docs/cold-starts.md)
    preload: list[str] | None = None  # what the template imports; None: what the App imports

    @property
    def health_check(self) -> EndpointSpec | None:
        """The endpoint that carries the user's health check, if any."""
        return next((e for e in self.endpoints if e.health_check is not None), None)

    @property
    def paths(self) -> frozenset[str]:
        """Every endpoint path."""
        return frozenset(e.path for e in self.endpoints)


def find_endpoints(cls: type) -> dict[str, tuple[str, EndpointMarker]]:
    """Map each endpoint path to (method name, marker), raising on duplicate paths."""
    found: dict[str, tuple[str, EndpointMarker]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            marker = getattr(value, ENDPOINT_ATTR, None)
            if not isinstance(marker, EndpointMarker):
                continue
            # A subclass overriding the same method keeps its path; a new method on a taken
            # path is a mistake.
            for path, (other, _) in list(found.items()):
                if other == name:
                    del found[path]
            if marker.path in found:
                raise AppDefinitionError(
                    f"{cls.__name__}: endpoints {found[marker.path][0]!r} and {name!r} both use "
                    f"path {marker.path!r}; give each endpoint its own path"
                )
            found[marker.path] = (name, marker)
    return found


def build_spec(cls: type[App]) -> AppSpec:
    """Validate an App class and describe it. Pure."""
    name = cls.__name__
    _check_near_settings(cls)
    values = {key: getattr(cls, key, default) for key, default in SETTINGS.items()}
    machine_types = _machine_types(name, values["machine_type"])
    endpoints = [_endpoint_spec(cls, path, m, mk) for path, (m, mk) in find_endpoints(cls).items()]
    if not endpoints:
        raise AppDefinitionError(
            f"{name} has no endpoints; decorate a method with @yurt.endpoint('/')"
        )
    health = [e.path for e in endpoints if e.health_check is not None]
    if len(health) > 1:
        raise AppDefinitionError(
            f"{name}: endpoints {health} each declare a health_check; keep it on one endpoint"
        )
    app_name = default_app_name(name) if values["app_name"] is None else values["app_name"]
    if not isinstance(app_name, str) or not _is_url_segment(app_name):
        raise AppDefinitionError(
            f"{name}: app_name {app_name!r} must be a non-empty URL segment of letters, digits, "
            "'-', '_' or '.'"
        )
    if values["app_auth"] not in APP_AUTH:
        raise AppDefinitionError(
            f"{name}: app_auth {values['app_auth']!r} must be one of {APP_AUTH}"
        )
    knobs = _knobs(name, values)
    return AppSpec(
        app_name=app_name,
        class_name=name,
        app_auth=values["app_auth"],
        machine_types=machine_types,
        num_gpus=_num_gpus(name, values["num_gpus"], machine_types),
        requirements=_requirements(name, values["requirements"]),
        local_python_modules=_module_names(name, values["local_python_modules"]),
        skip_retry_conditions=_skip_conditions(name, values["skip_retry_conditions"]),
        required_secrets=_required_secrets(name, values["required_secrets"]),
        image=_image(name, values["image"]),
        fork_runners=_fork_runners(name, values["fork_runners"]),
        preload=None if values["preload"] is None else _preload(name, values["preload"]),
        endpoints=sorted(endpoints, key=lambda e: e.path),
        **knobs,
    )


def _check_near_settings(cls: type) -> None:
    """Refuse a class attribute one typo away from a setting (``keep_alvie = 10``).

    Such an attribute would otherwise be ignored in silence and the setting keep its default.
    Methods, descriptors and private names are the class's own business and are left alone.
    """
    for klass in cls.__mro__:
        if klass is App or not (isinstance(klass, type) and issubclass(klass, App)):
            continue
        for attr, value in vars(klass).items():
            if attr.startswith("_") or callable(value) or isinstance(value, _DESCRIPTORS):
                continue
            setting = near_setting(attr)
            if setting is not None:
                raise AppDefinitionError(
                    f"{cls.__name__}: class attribute {attr!r} is not an App setting; did you "
                    f"mean {setting!r}? Rename it to {setting}, or to a name that is not this "
                    "close to a setting if it is your own attribute"
                )


_DESCRIPTORS = (classmethod, staticmethod, property)


def _is_url_segment(value: str) -> bool:
    # "." and ".." are dot-segments: URL clients resolve them away (RFC 3986 section 5.2.4).
    return (
        value not in (".", "..")
        and bool(value)
        and all(c.isalnum() or c in "-_." for c in value)
        and value.isascii()
    )


def _machine_types(name: str, value: object) -> list[str]:
    types = [value] if isinstance(value, str) else value
    if not isinstance(types, list | tuple) or not types:
        raise AppDefinitionError(
            f"{name}: machine_type {value!r} must be a name or a non-empty list of names"
        )
    types = [ALIASES.get(t, t) if isinstance(t, str) else t for t in types]
    for t in types:
        if t not in CATALOG:
            raise AppDefinitionError(
                f"{name}: unknown machine_type {t!r}; use one of {known_machine_types()} "
                "(fal's names included). A server operator tunes a type's GPU model pattern, "
                "memory and CPU in the [machines] section of the server config"
            )
    kinds = {CATALOG[t].gpu for t in types}
    if len(kinds) > 1:
        raise AppDefinitionError(
            f"{name}: machine_type {list(types)} mixes CPU and GPU types; list only GPU types "
            "as fallbacks for each other"
        )
    return list(types)


def _num_gpus(name: str, value: object, machine_types: list[str]) -> int:
    gpu = CATALOG[machine_types[0]].gpu
    if value is None:
        return 1 if gpu else 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AppDefinitionError(f"{name}: num_gpus {value!r} must be a non-negative integer")
    if not gpu and value > 0:
        raise AppDefinitionError(
            f"{name}: num_gpus={value} on machine_type {machine_types}; pick a GPU machine type "
            "such as 'GPU-H100' or drop num_gpus"
        )
    if gpu and value == 0:
        raise AppDefinitionError(f"{name}: a GPU machine type needs num_gpus >= 1")
    return value


def _requirements(name: str, value: object) -> list[str] | list[list[str]]:
    """fal's two spellings: requirement strings, or lists of them installed in that order."""
    if isinstance(value, list | tuple) and all(isinstance(r, str) for r in value):
        return [str(r) for r in value]
    if isinstance(value, list | tuple) and all(
        isinstance(step, list | tuple) and all(isinstance(r, str) for r in step) for step in value
    ):
        return [[str(r) for r in step] for step in value]
    raise AppDefinitionError(
        f"{name}: requirements must be a list of pip requirement strings, or a list of such "
        "lists installed in order"
    )


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _module_names(name: str, value: object) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(m, str) for m in value):
        raise AppDefinitionError(
            f"{name}: local_python_modules must be a list of module names, "
            "e.g. ['my_package', 'helpers.text']"
        )
    bad = [m for m in value if not _MODULE_NAME.fullmatch(m)]
    if bad:
        raise AppDefinitionError(
            f"{name}: local_python_modules entry {bad[0]!r} is not a module name; write it "
            "as in an import statement, e.g. 'my_package.sub' (no path, no .py)"
        )
    return list(value)


def _fork_runners(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise AppDefinitionError(
            f"{name}: fork_runners must be True (runners forked from a warm template) or False "
            f"(each runner a fresh interpreter); got {value!r}"
        )
    return value


def _preload(name: str, value: object) -> list[str]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(m, str) and _MODULE_NAME.fullmatch(m) for m in value
    ):
        raise AppDefinitionError(
            f"{name}: preload must be a list of module names to import ahead of demand, as in "
            f"an import statement, e.g. ['torch', 'diffusers'], or None; got {value!r}"
        )
    return list(value)


def _image(name: str, value: object) -> str | None:
    if value is None or (isinstance(value, str) and value.strip() and value == value.strip()):
        return value
    raise AppDefinitionError(
        f"{name}: image must be a container image reference such as "
        f"'ghcr.io/me/my-app:1.0' (with yurt installed), or None; got {value!r}"
    )


def _required_secrets(name: str, value: object) -> list[str]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, str) and _ENV_NAME.match(v) for v in value
    ):
        raise AppDefinitionError(
            f"{name}: required_secrets must be a list of secret names (environment variable "
            "names such as 'HF_TOKEN')"
        )
    return sorted(set(value))


def _skip_conditions(name: str, value: object) -> list[RetryCondition]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or any(v not in RETRY_CONDITIONS for v in value):
        raise AppDefinitionError(
            f"{name}: skip_retry_conditions {value!r} must be a list drawn from {RETRY_CONDITIONS}"
        )
    return list(value)


def _number(name: str, key: str, value: object, *, integer: bool, minimum: float) -> Any:
    ok_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value):
        kind = "an integer" if integer else "a number"
        raise AppDefinitionError(f"{name}: {key}={value!r} must be {kind}")
    if value < minimum:
        raise AppDefinitionError(f"{name}: {key}={value!r} must be >= {minimum:g}")
    return value


def _knobs(name: str, values: dict[str, Any]) -> dict[str, Any]:
    ints = {
        "min_concurrency": 0,
        "max_concurrency": 1,
        "concurrency_buffer": 0,
        "concurrency_buffer_perc": 0,
        "max_multiplexing": 1,
    }
    floats = {
        "scaling_delay": 0,
        "keep_alive": 0,
        "request_timeout": 0.001,
        "startup_timeout": 0.001,
        "termination_grace_period_seconds": 0,
    }
    out = {k: _number(name, k, values[k], integer=True, minimum=m) for k, m in ints.items()}
    out |= {
        k: float(_number(name, k, values[k], integer=False, minimum=m)) for k, m in floats.items()
    }
    if out["min_concurrency"] > out["max_concurrency"]:
        raise AppDefinitionError(
            f"{name}: min_concurrency={out['min_concurrency']} exceeds "
            f"max_concurrency={out['max_concurrency']}; raise max_concurrency or lower "
            "min_concurrency"
        )
    if out["concurrency_buffer_perc"] > 100:
        raise AppDefinitionError(
            f"{name}: concurrency_buffer_perc={out['concurrency_buffer_perc']} must be 0..100"
        )
    return out


def _endpoint_spec(cls: type, path: str, method_name: str, marker: EndpointMarker) -> EndpointSpec:
    func = getattr(cls, method_name)
    where = f"{cls.__name__}.{method_name}"
    kind = signatures.style(func, where, is_websocket=marker.is_websocket)
    if marker.is_websocket and marker.health_check is not None:
        raise AppDefinitionError(
            f"{where}: a websocket endpoint cannot carry a health_check; put it on a POST endpoint"
        )
    body = signatures.body_model(func, where) if kind == "model" else None
    output = signatures.output_model(func, where)
    if (rt := realtime_of(func)) is not None:
        # The method itself takes the websocket; what travels are its frames' models.
        body, output = rt.input_model, rt.output_model
    openapi = None
    if kind == "fastapi":
        openapi = _fastapi_openapi(cls, path, method_name, marker, where)
        if not marker.is_websocket:
            body = _whole_body_model(func, where, openapi, path)
    return EndpointSpec(
        path=path,
        method_name=method_name,
        is_async=inspect.iscoroutinefunction(func),
        is_websocket=marker.is_websocket,
        input_schema=body.model_json_schema() if body else None,
        output_schema=output.model_json_schema() if output else None,
        health_check=marker.health_check,
        style=kind,
        openapi=openapi,
        realtime=rt.settings if rt is not None else None,
    )


def _fastapi_openapi(
    cls: type, path: str, method_name: str, marker: EndpointMarker, where: str
) -> dict[str, Any]:
    from yurt.fastapi_app import route_openapi

    # A bare instance (no setup) only to get bound methods: FastAPI reads their signatures
    # without ``self``, as fal builds its app from ``cls(_allow_init=True)``.
    bound = getattr(object.__new__(cls), method_name)
    route = route_for(path, bound, marker.is_websocket, marker.health_check)
    return route_openapi(route, where)


def _whole_body_model(
    func: Callable[..., Any], where: str, openapi: dict[str, Any], path: str
) -> type[BaseModel] | None:
    """The model a FastAPI-style endpoint takes as its whole JSON body (one model beside
    ``Request``/``Response``, say), as FastAPI decided; None when the body is anything else."""
    operation = openapi.get("paths", {}).get(path, {}).get("post", {})
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    ref = schema.get("schema", {}).get("$ref", "")
    name = ref.rpartition("/")[2]
    hints = signatures.resolved_hints(func, where)
    models = [h for h in hints.values() if isinstance(h, type) and issubclass(h, BaseModel)]
    return next((m for m in models if m.__name__ == name), None) if name else None


def route_for(
    path: str, call: Callable[..., Any], is_websocket: bool, health_check: HealthCheck | None
) -> Any:
    """The ``yurt.fastapi_app.Route`` that serves endpoint ``call`` at ``path``."""
    from yurt.fastapi_app import Route

    extra = (health_check.method,) if health_check and health_check.method != "POST" else ()
    return Route(path, call, is_websocket=is_websocket, extra_methods=extra)


def endpoint_body_model(func: Callable[..., Any], where: str) -> type[BaseModel] | None:
    """The pydantic model of a model-style endpoint's body parameter, or None."""
    return signatures.body_model(func, where)
