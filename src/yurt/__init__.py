"""yurt: serverless inference on your own cluster.

Users import from ``yurt`` only; everything else may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from yurt.app import App, HealthCheck, RequestContext, endpoint
from yurt.errors import (
    AppDefinitionError,
    AppException,
    PayloadError,
    RequestError,
    YurtError,
)
from yurt.spec import AppSpec, build_spec

if TYPE_CHECKING:
    from yurt.client import (
        AsyncClient,
        AsyncRequestHandle,
        Client,
        Completed,
        ConnectionFailed,
        InProgress,
        Queued,
        RequestFailed,
        RequestHandle,
        Status,
    )
    from yurt.deployment import Deployed
    from yurt.embed import ServedApp

# The client is loaded on first use (PEP 562): runners import ``yurt`` and need none of it.
_CLIENT_NAMES = frozenset(
    {
        "AsyncClient",
        "AsyncRequestHandle",
        "Client",
        "Completed",
        "ConnectionFailed",
        "InProgress",
        "Queued",
        "RequestFailed",
        "RequestHandle",
        "Status",
    }
)


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from yurt import client

        return getattr(client, name)
    if name == "toolkit":  # ``import yurt as fal`` then ``fal.toolkit.Image``, as fal spells it
        import yurt.toolkit

        return yurt.toolkit
    raise AttributeError(f"module 'yurt' has no attribute {name!r}")


def serve(app: type[App], **options: Any) -> ServedApp:
    """Serve ``app`` on an ephemeral port for tests: ``async with yurt.serve(Echo) as app:``.

    Imported lazily so that the runner, which imports ``yurt``, loads no control-plane code.
    """
    from yurt.embed import ServedApp

    return ServedApp(app, **options)


def deploy(app: type[App], **options: Any) -> Deployed:
    """Deploy ``app`` to a yurt server: ``yurt.deploy(Echo, server="http://yurt:8080")``.

    Options: ``server`` ($YURT_SERVER), ``token`` ($YURT_ADMIN_TOKEN), ``owner``, ``timeout``,
    ``progress`` (called with each step's line). Raises ``DeployError`` with the fix.
    """
    from yurt.deployment import deploy as deploy_app

    return deploy_app(app, **options)


__all__ = [
    "App",
    "AppDefinitionError",
    "AppException",
    "AppSpec",
    "AsyncClient",
    "AsyncRequestHandle",
    "Client",
    "Completed",
    "ConnectionFailed",
    "HealthCheck",
    "InProgress",
    "PayloadError",
    "Queued",
    "RequestContext",
    "RequestError",
    "RequestFailed",
    "RequestHandle",
    "Status",
    "YurtError",
    "__version__",
    "build_spec",
    "deploy",
    "endpoint",
    "serve",
]
