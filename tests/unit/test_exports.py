"""Tests for yurt's public surface: what ``import yurt`` exports and what it loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import yurt

EXPECTED = [
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
    "RealtimeError",
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
    "realtime",
    "serve",
]

# Control-plane and server code that the runner (which imports ``yurt``) must not load.
FORBIDDEN_PREFIXES = (
    "yurt.router",
    "yurt.admin",
    "yurt.deployment",
    "yurt.platform",
    "yurt.backends",
    "yurt.scheduler",
    "yurt.discovery",
    "yurt.embed",
    "yurt.cli",
    "yurt.client",
    "aiohttp.web",
)


def test_all_is_sorted() -> None:
    """``yurt.__all__`` is kept sorted."""
    assert yurt.__all__ == sorted(yurt.__all__)


def test_all_is_the_expected_list() -> None:
    """``yurt.__all__`` is exactly the documented public surface."""
    assert yurt.__all__ == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_every_exported_name_resolves(name: str) -> None:
    """Each name in ``__all__`` is an attribute of ``yurt``."""
    assert getattr(yurt, name, None) is not None


def test_version_is_a_string() -> None:
    """``yurt.__version__`` is a dotted version string."""
    assert isinstance(yurt.__version__, str)
    assert yurt.__version__.count(".") >= 1


def test_import_loads_no_control_plane_code() -> None:
    """A fresh ``import yurt`` loads no router, backend, scheduler, discovery or web server."""
    code = "import json, sys, yurt; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(out.stdout)
    assert "yurt" in loaded
    offending = [m for m in loaded if m.startswith(FORBIDDEN_PREFIXES)]
    assert offending == []


def test_sync_client_loads_no_aiohttp() -> None:
    """``yurt.Client`` needs only the standard library: using it loads no aiohttp."""
    code = (
        "import json, sys, yurt; yurt.Client('http://127.0.0.1:1'); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(out.stdout)
    assert "yurt.client" in loaded
    assert [m for m in loaded if m.startswith("aiohttp")] == []
