"""Runners answer the router only: a direct call without the runner's token gets 401 on every
route but the health check, and the app's code never sees the token."""

from __future__ import annotations

from pathlib import Path

from privacy_apps import Environment

from support import served

TOKEN_HEADER = "x-yurt-runner-token"


async def test_a_direct_call_without_the_token_is_refused(tmp_path: Path) -> None:
    """Endpoint, cancel, logs, info and metrics answer 401 in JSON; health answers; the router's
    own calls (with the token) work; a wrong token is refused too."""
    async with served(Environment, tmp_path) as app:
        status, env, _ = await app.post(json={})
        assert status == 200
        (runner,) = app.healthy()
        base = f"http://{runner.host}:{runner.port}"
        calls = [
            ("POST", "/"),
            ("POST", "/headers"),
            ("POST", "/cancel"),
            ("GET", "/_yurt/requests/0123/logs"),
            ("GET", "/_yurt/info"),
            ("GET", "/_yurt/metrics"),
        ]
        for headers in ({}, {TOKEN_HEADER: "not-" + runner.token}):
            for method, path in calls:
                async with app.session.request(method, base + path, headers=headers) as resp:
                    assert resp.status == 401, (method, path)
                    body = await resp.json()
                    assert body["error_type"] == "unauthorized" and "router" in body["detail"]
        async with app.session.get(base + "/_yurt/health") as resp:
            assert resp.status == 200
        async with app.session.get(base + "/_yurt/info", headers={TOKEN_HEADER: runner.token}) as r:
            assert r.status == 200

        # The token reaches neither the app's environment nor, as a header, its requests.
        assert runner.token not in str(env) and "YURT_RUNNER_TOKEN" not in env
        status, headers_seen, _ = await app.post("/headers", json={}, headers={TOKEN_HEADER: "x"})
        assert status == 200
        assert TOKEN_HEADER not in headers_seen  # neither the router's nor the caller's "x"
