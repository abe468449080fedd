"""``yurt doctor``: each check's line, the exit code, and the two HTTP calls."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from types import SimpleNamespace
from typing import Any

import pytest

from yurt.cli import doctor
from yurt.cli.doctor import Check, exit_code, run_checks

NOMAD_SELF = {"config": {"Version": {"Version": "1.9.3", "VersionPrerelease": ""}}}
CONSUL_SELF = {"Config": {"Version": "1.20.1", "Datacenter": "dc1"}}


class FakeNvml:
    """pynvml with one H100 (or none, with init failing)."""

    class NVMLError(Exception):
        pass

    def __init__(self, present: bool) -> None:
        self.present = present

    def nvmlInit(self) -> None:
        if not self.present:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return "GPU-1234"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(total=81559 * 1024 * 1024, used=0)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=0)


def fetch_from(bodies: dict[str, Any]) -> doctor.Fetch:
    """A fetch that answers known URLs and refuses the rest, recording headers."""

    def fetch(url: str, headers: dict[str, str]) -> Any:
        fetch.calls.append((url, headers))  # type: ignore[attr-defined]
        if url not in bodies:
            raise ConnectionRefusedError(111, "Connection refused")
        return bodies[url]

    fetch.calls = []  # type: ignore[attr-defined]
    return fetch


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_doctor_is_a_subcommand_with_its_flags() -> None:
    """add_parser registers ``doctor`` with --nomad-addr and --consul-addr."""
    parser = argparse.ArgumentParser()
    doctor.add_parser(parser.add_subparsers())
    args = parser.parse_args(["doctor", "--nomad-addr", "http://n:4646", "--consul-addr", "c"])
    assert (args.nomad_addr, args.consul_addr, args.handler) == (
        "http://n:4646",
        "c",
        doctor.handle,
    )


def test_all_good_exits_0() -> None:
    """Packages present, Nomad and Consul answer: every line OK, with versions; exit 0."""
    fetch = fetch_from(
        {"http://n:4646/v1/agent/self": NOMAD_SELF, "http://c:8500/v1/agent/self": CONSUL_SELF}
    )
    checks = run_checks(
        nomad_addr="http://n:4646/",
        nomad_token="nt",
        consul_addr="http://c:8500",
        consul_token="ct",
        nvml=FakeNvml(True),
        version_of=lambda name: "9.9",
        fetch=fetch,
    )
    found = by_name(checks)
    assert all(c.ok for c in checks)
    assert found["nomad"].line() == "OK    nomad: http://n:4646/ answers, Nomad 1.9.3"
    assert found["consul"].line() == "OK    consul: http://c:8500 answers, Consul 1.20.1"
    assert found["gpu 0"].detail == "NVIDIA H100 80GB HBM3, 81559 MiB, GPU-1234; serves GPU-H100"
    assert found["nvidia-ml-py"].detail == "9.9"
    assert fetch.calls == [  # type: ignore[attr-defined]
        ("http://n:4646/v1/agent/self", {"X-Nomad-Token": "nt"}),
        ("http://c:8500/v1/agent/self", {"X-Consul-Token": "ct"}),
    ]
    assert exit_code(checks) == 0


def test_missing_package_fails_with_the_install_line() -> None:
    """A required package that is missing is FAIL with the pip line; exit 1."""

    def version_of(name: str) -> str:
        if name == "structlog":
            raise metadata.PackageNotFoundError(name)
        return "1.0"

    checks = run_checks(nvml=FakeNvml(True), version_of=version_of, fetch=fetch_from({}))
    line = by_name(checks)["structlog"].line()
    assert line == "FAIL  structlog: not installed; fix: pip install 'structlog>=24.1'"
    assert exit_code(checks) == 1


def test_optional_package_missing_is_not_a_failure() -> None:
    """uvloop is optional: missing, it is noted and the exit code stays 0."""

    def version_of(name: str) -> str:
        if name == "uvloop":
            raise metadata.PackageNotFoundError(name)
        return "1.0"

    checks = run_checks(nvml=FakeNvml(True), version_of=version_of, fetch=fetch_from({}))
    assert by_name(checks)["uvloop"].line().startswith("--    uvloop: not installed")
    assert exit_code(checks) == 0


def test_no_gpu_is_noted_not_failed() -> None:
    """Without a driver the GPU line says why, marked optional; exit code unaffected."""
    checks = run_checks(nvml=FakeNvml(False), version_of=lambda n: "1", fetch=fetch_from({}))
    gpus = by_name(checks)["gpus"]
    assert not gpus.ok and not gpus.required
    assert gpus.line().startswith("--    gpus: none (NVML did not start: NVML Shared Library")
    assert exit_code(checks) == 0


def test_nomad_and_consul_unset_are_not_checked() -> None:
    """No address given or in env: both are skipped, not failed, and nothing is fetched."""
    fetch = fetch_from({})
    checks = run_checks(nvml=FakeNvml(True), version_of=lambda n: "1", fetch=fetch)
    found = by_name(checks)
    assert found["nomad"].line() == (
        "--    nomad: not checked; fix: give --nomad-addr or set NOMAD_ADDR to check it"
    )
    assert not found["consul"].required
    assert fetch.calls == []  # type: ignore[attr-defined]
    assert exit_code(checks) == 0


def test_nomad_down_fails_with_a_fix() -> None:
    """A configured Nomad that does not answer is FAIL, saying how to fix it; exit 1."""
    checks = run_checks(
        nomad_addr="http://n:4646",
        nvml=FakeNvml(True),
        version_of=lambda n: "1",
        fetch=fetch_from({}),
    )
    line = by_name(checks)["nomad"].line()
    assert line.startswith("FAIL  nomad: http://n:4646 does not answer (")
    assert line.endswith("fix: start nomad, or give the right address (--nomad-addr or NOMAD_ADDR)")
    assert exit_code(checks) == 1


def test_consul_answering_something_else_fails() -> None:
    """An address that answers, but not like Consul's agent endpoint, is FAIL."""
    checks = run_checks(
        consul_addr="http://c:8500",
        nvml=FakeNvml(True),
        version_of=lambda n: "1",
        fetch=fetch_from({"http://c:8500/v1/agent/self": {"hello": "world"}}),
    )
    consul = by_name(checks)["consul"]
    assert not consul.ok and "not as consul's /v1/agent/self does" in consul.detail


# -- the real HTTP calls, through handle() ------------------------------------------------------


@pytest.fixture
def agent() -> Iterator[str]:
    """A local server answering /v1/agent/self as Nomad (token 'good') and Consul do."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("X-Nomad-Token") == "bad":
                self.send_response(403)
                self.end_headers()
                return
            body = {**NOMAD_SELF, **CONSUL_SELF} if self.path == "/v1/agent/self" else None
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    doctor.add_parser(parser.add_subparsers())
    return parser.parse_args(["doctor", *argv])


def test_handle_reads_addresses_and_tokens_from_env(
    agent: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """NOMAD_ADDR and CONSUL_HTTP_ADDR (bare host:port) are checked over HTTP."""
    monkeypatch.setenv("NOMAD_ADDR", agent)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", agent.removeprefix("http://"))
    monkeypatch.setattr(doctor, "load_nvml", lambda: FakeNvml(True))
    doctor.handle(parse())
    out = capsys.readouterr().out.splitlines()
    assert f"OK    nomad: {agent} answers, Nomad 1.9.3" in out
    assert f"OK    consul: {agent} answers, Consul 1.20.1" in out


def test_handle_flag_beats_env_and_refused_token_says_so(
    agent: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--nomad-addr wins over NOMAD_ADDR; a 403 names the token as the fix; exit 1."""
    monkeypatch.setenv("NOMAD_ADDR", "http://127.0.0.1:1")
    monkeypatch.setenv("NOMAD_TOKEN", "bad")
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    monkeypatch.setattr(doctor, "load_nvml", lambda: FakeNvml(False))
    code = doctor.handle(parse("--nomad-addr", agent))
    out = capsys.readouterr().out
    assert f"FAIL  nomad: {agent} refused the token (HTTP 403); fix: set NOMAD_TOKEN" in out
    assert code == 1
