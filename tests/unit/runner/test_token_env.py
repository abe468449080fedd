"""The runner's token check and how the runner takes its token from its environment. Pure."""

from __future__ import annotations

from yurt.runner.token import RUNNER_TOKEN_ENV, allowed, take_token


def test_the_token_is_taken_out_of_the_environment() -> None:
    """take_token removes the variable, so the app's subprocesses never inherit it."""
    env = {RUNNER_TOKEN_ENV: "t0ken", "PATH": "/bin"}
    assert take_token(env) == "t0ken"
    assert env == {"PATH": "/bin"}
    assert take_token(env) is None
    assert take_token({RUNNER_TOKEN_ENV: ""}) is None


def test_only_health_checks_go_without_the_token() -> None:
    """Health paths are open; every other path wants exactly the token."""
    assert allowed("t", "/_yurt/health", None)
    assert allowed("t", "/health", None)
    assert allowed("t", "/", "t")
    assert not allowed("t", "/", None)
    assert not allowed("t", "/", "T")
    assert not allowed("t", "/_yurt/health/x", None)
    assert not allowed("t", "/cancel", "t\x00")
