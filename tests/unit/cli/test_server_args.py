"""Parsing `yurt server`, `deploy` and `jobspec` command lines, and the configuration merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yurt.cli.main import build_parser
from yurt.cli.options import config_from_args
from yurt.config import build_server_config
from yurt.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_server_job_arguments_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line jobs/yurt-server.json runs is one ``yurt server`` accepts."""
    monkeypatch.setenv("YURT_ADMIN_TOKEN", "t")
    body = json.loads((ROOT / "jobs" / "yurt-server.json").read_text())
    config = body["Job"]["TaskGroups"][0]["Tasks"][0]["Config"]
    interpolated = {
        "${NOMAD_IP_http}": "10.0.0.5",
        "${NOMAD_PORT_http}": "8080",
        "http://${NOMAD_ADDR_http}": "http://10.0.0.5:8080",
    }
    args = [interpolated.get(a, a) for a in config["args"]]
    assert config["entrypoint"] == ["yurt"]
    parsed = build_parser().parse_args(args)
    server = config_from_args(parsed)
    assert server.backend == "nomad" and server.router.host == "10.0.0.5"
    assert server.nomad.driver == "docker" and server.admin_token == "t"
    assert server.router.public_url == "http://10.0.0.5:8080"


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    """A flag overrides NOMAD_ADDR, which overrides the config file, which overrides defaults."""
    file = {"nomad": {"addr": "http://file:4646", "region": "eu"}, "consul": {"addr": "http://f"}}
    env = {"NOMAD_ADDR": "http://env:4646", "CONSUL_HTTP_ADDR": "consul.local:8500"}
    config = build_server_config(file, {"nomad": {"addr": "http://flag:4646"}}, env)
    assert config.nomad.addr == "http://flag:4646"
    assert config.nomad.region == "eu"
    assert config.consul.addr == "http://consul.local:8500"
    assert build_server_config(file, {}, env).nomad.addr == "http://env:4646"


def test_config_file_sections_and_mistakes(tmp_path: Path) -> None:
    """A TOML file sets nested fields; a wrong value is a ConfigError naming the field."""
    good = tmp_path / "yurt.toml"
    good.write_text('backend = "nomad"\n[nomad]\ndatacenters = ["dc1"]\ncheck_interval = 2.0\n')
    args = build_parser().parse_args(["server", "--config", str(good), "--data-dir", "/d"])
    config = config_from_args(args)
    assert config.backend == "nomad" and config.nomad.datacenters == ("dc1",)
    bad = tmp_path / "bad.toml"
    bad.write_text("[nomad]\ncheck_interval = 0.1\n")
    args = build_parser().parse_args(["server", "--config", str(bad)])
    with pytest.raises(ConfigError, match=r"nomad\.check_interval"):
        config_from_args(args)
    broken = tmp_path / "broken.toml"
    broken.write_text("[nomad\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_from_args(build_parser().parse_args(["server", "--config", str(broken)]))


def test_deploy_and_jobspec_arguments() -> None:
    """deploy takes a target, --server, --token and --owner; jobspec takes cluster flags."""
    args = build_parser().parse_args(
        ["deploy", "a.py::A", "--server", "http://s:8080", "--token", "t", "--owner", "me"]
    )
    assert (args.target, args.server, args.token, args.owner) == (
        "a.py::A",
        "http://s:8080",
        "t",
        "me",
    )
    args = build_parser().parse_args(
        ["jobspec", "a.py::A", "--nomad-driver", "docker", "--datacenter", "a"]
    )
    assert config_from_args(args).nomad.datacenters == ("a",)
    # Discovery follows one Consul datacenter: a second is refused, not silently unrouted.
    args = build_parser().parse_args(
        ["jobspec", "a.py::A", "--datacenter", "a", "--datacenter", "b"]
    )
    with pytest.raises(ConfigError, match="one datacenter name"):
        config_from_args(args)


def test_machine_catalog_changes_are_checked() -> None:
    """[machines] changes known types only, and comes back as plain data for runners."""
    config = build_server_config(
        {"machines": {"GPU-H100": {"cpu_mhz": 16000}, "GPU-A100": {}}}, {}, {}
    )
    assert config.machine_overrides() == {"GPU-H100": {"cpu_mhz": 16000}}
    with pytest.raises(ConfigError, match="unknown machine types"):
        build_server_config({"machines": {"GPU-L40S": {"cpu_mhz": 1}}}, {}, {})


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("H100(", "not a regular expression"),
        ("H100${NOMAD_ALLOC_ID}", "interpolate"),
        ("(?!H100)", "RE2"),
        (r"(H)\1", "RE2"),
    ],
)
def test_bad_gpu_patterns_are_refused(pattern: str, why: str) -> None:
    """A GPU model pattern must compile, survive Nomad's interpolation, and suit Go's RE2."""
    with pytest.raises(ConfigError, match=why):
        build_server_config({"machines": {"GPU-H100": {"gpu_model_pattern": pattern}}}, {}, {})
    good = {"machines": {"GPU-H100": {"gpu_model_pattern": r"\bH100\b$"}}}
    assert build_server_config(good, {}, {}).machines["GPU-H100"].gpu_model_pattern
