"""The runner's FastAPI app for an App's fal-style endpoints (``style == "fastapi"``)."""

from __future__ import annotations

from fastapi import FastAPI

from yurt.app import App
from yurt.fastapi_app import build_app
from yurt.spec import EndpointSpec, route_for


def build_endpoint_app(instance: App, endpoints: list[EndpointSpec]) -> FastAPI:
    """FastAPI serving ``endpoints`` as bound methods of ``instance``."""
    routes = [
        route_for(ep.path, getattr(instance, ep.method_name), ep.is_websocket, ep.health_check)
        for ep in endpoints
    ]
    return build_app(routes)
