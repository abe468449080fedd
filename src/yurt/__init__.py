"""yurt: serverless inference on your own cluster.

Users import from ``yurt`` only; everything else may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from yurt.app import App, HealthCheck, endpoint
from yurt.errors import (
    AppDefinitionError,
    AppException,
    PayloadError,
    RequestError,
    YurtError,
)
from yurt.spec import AppSpec, build_spec

if TYPE_CHECKING:
    from yurt.embed import ServedApp


def serve(app: type[App], **options: Any) -> ServedApp:
    """Serve ``app`` on an ephemeral port for tests: ``async with yurt.serve(Echo) as app:``.

    Imported lazily so that the runner, which imports ``yurt``, loads no control-plane code.
    """
    from yurt.embed import ServedApp

    return ServedApp(app, **options)


__all__ = [
    "App",
    "AppDefinitionError",
    "AppException",
    "AppSpec",
    "HealthCheck",
    "PayloadError",
    "RequestError",
    "YurtError",
    "__version__",
    "build_spec",
    "endpoint",
    "serve",
]
