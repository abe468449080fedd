"""The user's API: ``App``, ``endpoint``, ``HealthCheck`` and ``RequestContext``.

An App is a class with ``setup()`` and endpoints. Its settings are class attributes or class
keyword arguments (``class Echo(yurt.App, keep_alive=30)``), validated when the class is created
so that a mistake surfaces where it was made, not on a runner minutes later: a class attribute
one typo away from a setting (``keep_alvie``) is refused, not ignored. fal's spellings hold:
``name=`` as a class keyword sets ``app_name``, whose default follows fal's rule.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from yurt.errors import AppDefinitionError

F = TypeVar("F", bound=Callable[..., Any])

ENDPOINT_ATTR = "__yurt_endpoint__"

# cloudpickle rebuilds a class as an empty skeleton first and fills it in afterwards, so
# validation at class creation must stand aside while a payload is being unpickled.
_unpickling: contextvars.ContextVar[bool] = contextvars.ContextVar("yurt_unpickling", default=False)


@contextlib.contextmanager
def unpickling_apps() -> Iterator[None]:
    """Within this block, App subclasses are created without validation (payload loading)."""
    token = _unpickling.set(True)
    try:
        yield
    finally:
        _unpickling.reset(token)


class RequestContext:
    """The request an endpoint is serving: ``self.current_request`` inside an endpoint.

    Read-only. ``headers`` is the incoming request's headers (case-insensitive on a runner);
    ``endpoint`` the path of the endpoint serving it (fal's ``current_request.endpoint``);
    ``cancelled`` turns true once a caller asked to cancel the request, which a sync endpoint
    can poll to stop early (an async endpoint is cancelled for it).
    """

    __slots__ = ("_cancel", "_endpoint", "_headers", "_request_id")

    def __init__(
        self,
        request_id: str,
        headers: Mapping[str, str],
        cancel: threading.Event | None = None,
        endpoint: str = "",
    ) -> None:
        self._request_id = request_id
        self._headers = headers
        self._cancel = cancel if cancel is not None else threading.Event()
        self._endpoint = endpoint

    @property
    def endpoint(self) -> str:
        """The path of the endpoint serving the request, e.g. ``"/"`` or ``"/generate"``."""
        return self._endpoint

    @property
    def request_id(self) -> str:
        """The ``x-fal-request-id`` the router gave the request; "" when it came without one."""
        return self._request_id

    @property
    def headers(self) -> Mapping[str, str]:
        """The request's headers."""
        return self._headers

    @property
    def cancelled(self) -> bool:
        """Whether cancellation of this request was requested."""
        return self._cancel.is_set()

    def __repr__(self) -> str:
        return (
            f"RequestContext(request_id={self._request_id!r}, endpoint={self._endpoint!r}, "
            f"cancelled={self.cancelled})"
        )


# Set by the runner around each endpoint call; sync endpoints see it through the copied context.
CURRENT_REQUEST: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "yurt_current_request", default=None
)


class HealthCheck(BaseModel):
    """A user health check, attached to one endpoint (``@endpoint(..., health_check=...)``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start_period_seconds: float = Field(default=30, ge=0)
    timeout_seconds: float = Field(default=5, gt=0)
    failure_threshold: int = Field(default=3, ge=1)
    call_regularly: bool = True
    # The HTTP method the endpoint also answers for health checks (fal's ``method``; None is
    # POST). The runner runs the check in-process, so this only adds the route.
    method: Literal["GET", "POST"] = "POST"

    @model_validator(mode="before")
    @classmethod
    def _none_is_default(cls, values: Any) -> Any:
        # fal's HealthCheck takes None for "the default" in every field.
        if isinstance(values, dict):
            return {k: v for k, v in values.items() if v is not None}
        return values

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: object) -> object:
        if value is None:
            return "POST"
        return value.upper() if isinstance(value, str) else value


@dataclass(frozen=True)
class EndpointMarker:
    """What ``@endpoint`` records on a method."""

    path: str
    is_websocket: bool
    health_check: HealthCheck | None


def endpoint(
    path: str, *, is_websocket: bool = False, health_check: HealthCheck | None = None
) -> Callable[[F], F]:
    """Mark a method as an endpoint at ``path`` (POST; a websocket with ``is_websocket``).

    One parameter annotated with a pydantic model is the whole JSON body (served on the
    runner's fastest path); anything else FastAPI accepts for a route works as it does there
    and in fal (several parameters, ``dict``, ``fastapi.Request``/``Response``; see
    docs/apps.md). A websocket endpoint is ``async def`` taking a ``fastapi.WebSocket``.

    The runner also answers ``POST {path}/cancel`` (``/cancel`` for ``/``) to cancel a request
    in flight, unless the App declares an endpoint at that very path: then the App's wins.
    """
    if callable(path):
        # ``@yurt.endpoint`` without ``(...)`` hands the method itself over as the path.
        name = getattr(path, "__name__", repr(path))
        raise AppDefinitionError(
            f"@yurt.endpoint on {name!r} has no parentheses; an endpoint needs its path: "
            f"write @yurt.endpoint('/') (or another path starting with '/') above {name}"
        )
    if not isinstance(path, str) or not path.startswith("/"):
        raise AppDefinitionError(f"endpoint path {path!r} must be a string starting with '/'")
    normalized = "/" + path.strip("/") if path != "/" else "/"
    if normalized.startswith("/_yurt"):
        raise AppDefinitionError(f"endpoint path {path!r}: paths under /_yurt are reserved")

    def mark(func: F) -> F:
        if hasattr(func, ENDPOINT_ATTR):
            name = getattr(func, "__name__", repr(func))
            raise AppDefinitionError(
                f"{name} is already an endpoint at {getattr(func, ENDPOINT_ATTR).path!r}; one "
                "method serves one path: write a second method for the other path"
            )
        setattr(func, ENDPOINT_ATTR, EndpointMarker(normalized, is_websocket, health_check))
        return func

    return mark


# fal's rule for the default app name (``fal.app._to_fal_app_name``), matched exactly so that
# a fal App keeps its URL here: each capital starts a word, and only letters count.
_NAME_PART = re.compile(r"[A-Z][a-z]*")


def default_app_name(class_name: str) -> str:
    """The app_name of a class that sets none, as fal derives it.

    ``MyGoodApp`` -> ``my-good-app``, ``BiRefNetRMBG`` -> ``bi-ref-net-r-m-b-g`` (each capital
    is a word), ``Model2Text`` -> ``model-text`` (digits and lowercase prefixes drop out);
    a name without capitals: ``my_model`` -> ``my-model``, ``echo`` -> ``echo``.
    """
    parts = _NAME_PART.findall(class_name)
    if parts:
        return "-".join(part.lower() for part in parts)
    if "_" in class_name:
        return "-".join(part.lower() for part in class_name.split("_") if part)
    return class_name.lower()


class App:
    """Base class of every yurt App. Override ``setup()``, ``teardown()`` and add endpoints."""

    app_name: ClassVar[str | None] = None
    app_auth: ClassVar[str] = "private"
    machine_type: ClassVar[str | list[str]] = "CPU"
    num_gpus: ClassVar[int | None] = None
    requirements: ClassVar[list[str]] = []
    local_python_modules: ClassVar[list[str]] = []
    min_concurrency: ClassVar[int] = 0
    max_concurrency: ClassVar[int] = 2
    concurrency_buffer: ClassVar[int] = 0
    concurrency_buffer_perc: ClassVar[int] = 0
    scaling_delay: ClassVar[float] = 0.0
    max_multiplexing: ClassVar[int] = 1
    keep_alive: ClassVar[float] = 60.0
    request_timeout: ClassVar[float] = 3600.0
    startup_timeout: ClassVar[float] = 600.0
    termination_grace_period_seconds: ClassVar[float] = 5.0
    skip_retry_conditions: ClassVar[list[str] | None] = None
    # Secrets (``yurt secrets set``) this app cannot start without: a runner is not started
    # while one is unset, and waiting callers get a 503 naming it. Every secret reaches every
    # app; this only checks.
    required_secrets: ClassVar[list[str]] = []
    # A container image with the app's environment, yurt and its runner inside (fal's
    # container images), run by Nomad's docker driver instead of ``[nomad] image``.
    image: ClassVar[str | None] = None
    # Runners forked from a warm template process of the app's environment, which has imported
    # the runner and ``preload`` (docs/cold-starts.md); False: each runner a fresh interpreter.
    fork_runners: ClassVar[bool] = True
    # Modules the template imports ahead of demand (e.g. ["torch", "diffusers"]); None: what
    # unpickling the App imports (its module's imports that its code refers to).
    preload: ClassVar[list[str] | None] = None
    # What ``health()`` reports (fal's attribute and default). Not among SETTINGS: it is the
    # app's own label, and a near name (``versions``) must stay free for the app's use.
    version = "unknown"

    def __init_subclass__(cls, **settings: Any) -> None:
        # fal's spelling of the app name as a class keyword: ``class A(App, name="a")``.
        name = settings.pop("name", None)
        fal_only = {key: settings.pop(key) for key in list(settings) if key in _fal_only()}
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise AppDefinitionError(
                f"{cls.__name__}: unknown App setting(s) {unknown}{_suggest(unknown)}; "
                f"known settings are {sorted(SETTINGS)}"
            )
        super().__init_subclass__()
        if _unpickling.get():
            return
        _check_fal_settings(cls, fal_only)
        if name is not None:
            settings["app_name"] = _keyword_name(cls, name, settings.get("app_name"))
        if "__init__" in cls.__dict__:
            raise AppDefinitionError(
                f"{cls.__name__} overrides __init__; App classes must not: "
                "use setup() instead (it runs once on each runner before requests arrive)"
            )
        for key, value in settings.items():
            setattr(cls, key, value)
        # Validate now: a bad class fails where it is written, not on a runner.
        from yurt.packaging import local_modules
        from yurt.spec import build_spec

        build_spec(cls)
        local_modules(cls)  # each named module imports here, as packing will need it

    def setup(self) -> Any:
        """Load models and other state; runs once per runner before it takes requests."""

    def teardown(self) -> Any:
        """Release resources; runs once after in-flight requests have drained."""

    def handle_exit(self) -> Any:
        """Called once when the runner is told to stop, before draining (fal's hook): e.g. to
        make a long request wind down early. Runs beside the requests still in flight."""

    def health(self) -> Any:
        """What the runner's ``GET /health`` answers once ready (fal's): ``{"version": ...}``."""
        return {"version": self.version}

    @classmethod
    def get_endpoints(cls) -> list[str]:
        """The paths of the App's endpoints (fal's ``App.get_endpoints``)."""
        from yurt.spec import find_endpoints

        return sorted(find_endpoints(cls))

    def openapi(self) -> dict[str, Any]:
        """The App's OpenAPI document, as its runner and the router serve it (fal's
        ``App.openapi``)."""
        from yurt.openapi import document
        from yurt.spec import build_spec

        return document(build_spec(type(self)))

    def provide_hints(self) -> list[str]:
        """Hints the router may use to pick this runner (e.g. which weights are loaded).

        Called after ``setup()`` and after each request, on the runner's event loop, so keep it
        cheap. A hint must be non-empty printable ASCII without commas; others are dropped with
        a warning. Same as fal's ``App.provide_hints``.
        """
        return []

    @property
    def current_request(self) -> RequestContext | None:
        """The request being served by the calling endpoint; None outside a request."""
        return CURRENT_REQUEST.get()


class FalSettingIgnored(UserWarning):
    """A fal App setting that only steers fal's own cloud was given: it has no effect here."""


# fal App settings yurt refuses, with why and what to write instead. Given as a class attribute
# or a class keyword, each fails at class creation: never ignored in silence.
FAL_REFUSED: dict[str, str] = {
    "app_files": "yurt ships Python modules (local_python_modules), not arbitrary files; load "
    "data files in setup() from the app's data directory or download them there",
    "app_files_ignore": "it goes with app_files, which yurt does not take",
    "app_files_context_dir": "it goes with app_files, which yurt does not take",
    "requirements_context_dir": "yurt installs requirements from package indexes; ship local "
    "code with local_python_modules",
    "retry_config": "the router's retries follow the platform rules and the server's [queue] "
    "config; to stop retries on some failures set skip_retry_conditions",
    "secrets": "every secret set with `yurt secrets set` reaches every app; list those the app "
    "cannot start without in required_secrets",
}
# fal App settings that only steer fal's own cloud: accepted so that an app moves over
# unchanged, with a ``FalSettingIgnored`` warning at class creation saying so.
FAL_CLOUD_ONLY: dict[str, str] = {
    "regions": "runners run where Nomad places them (or on this machine)",
    "host_kwargs": "they are options of fal's hosts; set yurt's settings as class attributes",
    "kind": "it selects a kind of fal host",
    "metrics_port": "the runner serves its metrics at /_yurt/metrics on its own port",
    "resolver": "yurt's environments are installed by the server's [envs] installer",
    "local_file_path": "fal's CLI sets it for its own use",
    "data_mounts": "each app's data directory is mounted for it (docs/environments.md)",
}


def _fal_only() -> set[str]:
    """The fal settings above that yurt has not (yet) made settings of its own."""
    return (FAL_REFUSED.keys() | FAL_CLOUD_ONLY.keys()) - SETTINGS.keys()


def _check_fal_settings(cls: type, keywords: Mapping[str, object]) -> None:
    """Refuse fal settings yurt does not take; warn about fal cloud settings given."""
    given = set(keywords)
    for klass in cls.__mro__:
        if klass is not App and isinstance(klass, type) and issubclass(klass, App):
            given |= _fal_only() & set(vars(klass))
    for key in sorted(given):
        if key in FAL_REFUSED:
            raise AppDefinitionError(
                f"{cls.__name__}: fal's App setting {key!r} is not supported by yurt: "
                f"{FAL_REFUSED[key]}"
            )
        warnings.warn(
            f"{cls.__name__}: fal's App setting {key!r} has no effect on yurt: "
            f"{FAL_CLOUD_ONLY[key]}",
            FalSettingIgnored,
            stacklevel=4,
        )


def _keyword_name(cls: type, name: object, keyword: object) -> object:
    own = keyword if keyword is not None else cls.__dict__.get("app_name")
    if own is not None and own != name:
        raise AppDefinitionError(
            f"{cls.__name__}: name={name!r} and app_name = {own!r} disagree; "
            "give the app name once, as name=... or as app_name"
        )
    return name


def _suggest(names: list[str]) -> str:
    close = {n: near_setting(n) for n in names}
    hints = [f"{n!r} -> {s!r}" for n, s in close.items() if s is not None]
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def near_setting(name: str) -> str | None:
    """The App setting ``name`` is probably a misspelling of, or None."""
    if name in SETTINGS:
        return None
    close = difflib.get_close_matches(name, SETTINGS, n=1, cutoff=0.8)
    return close[0] if close else None


# Every setting an App may carry, with its default: read off the class above, so the two
# cannot drift. Names and defaults follow fal's App.
SETTINGS: dict[str, Any] = {name: vars(App)[name] for name in App.__annotations__}
