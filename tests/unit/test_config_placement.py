"""Placement settings in the config file: [machines] pools and constraints, [nomad] placement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from yurt.config import build_server_config, read_config_file
from yurt.errors import ConfigError

TOML = """
[nomad]
driver = "docker"
datacenters = ["east"]

[nomad.volumes]
"team/llm" = { type = "csi", source = "models" }
"*" = { type = "host", source = "hf-cache", read_only = true }

[machines.GPU-H100]
node_pool = "gpu"
constraints = [
  { attribute = "${node.class}", operator = "=", value = "h100" },
  { attribute = "${meta.rack}", operator = "is_set" },
]
"""


def config(**nomad: Any) -> Any:
    """A ServerConfig with these [nomad] fields (no environment)."""
    return build_server_config({"data_dir": "/nonexistent", "nomad": nomad}, {}, environ={})


def test_placement_from_a_config_file(tmp_path: Path) -> None:
    """A TOML file sets the datacenter, per-app volumes and a machine type's pool and
    constraints; the datacenter is the one discovery asks."""
    path = tmp_path / "yurt.toml"
    path.write_text(TOML)
    cfg = build_server_config(read_config_file(path), {"data_dir": tmp_path}, environ={})
    assert cfg.nomad.datacenter() == "east"
    assert cfg.nomad.volume_for("team/llm").type == "csi"
    assert cfg.nomad.volume_for("team/other").source == "hf-cache"
    assert cfg.machine_overrides()["GPU-H100"] == {
        "node_pool": "gpu",
        "constraints": (
            {"attribute": "${node.class}", "operator": "=", "value": "h100"},
            {"attribute": "${meta.rack}", "operator": "is_set", "value": ""},
        ),
    }


def test_datacenters_default_to_the_agents() -> None:
    """Without [nomad] datacenters, none is configured (the Consul agent's is used)."""
    assert config().nomad.datacenters is None
    assert config().nomad.datacenter() is None


@pytest.mark.parametrize("value", [["*"], ["dc1", "dc2"], ["dc[12]"], [""]])
def test_datacenters_are_one_plain_name(value: list[str]) -> None:
    """Several datacenters or a glob are refused: discovery follows one Consul datacenter."""
    with pytest.raises(ConfigError, match=r"nomad\.datacenters.*one datacenter name"):
        config(datacenters=value)


def test_volumes_need_docker() -> None:
    """raw_exec cannot mount a volume, so volumes with it are refused at start."""
    with pytest.raises(ConfigError, match=r"volumes need driver = 'docker'"):
        config(volumes={"*": {"type": "host", "source": "hf"}})


def test_user_is_for_raw_exec() -> None:
    """[nomad] user is refused with docker (its image sets the user)."""
    assert config(user="yurt").nomad.user == "yurt"
    with pytest.raises(ConfigError, match=r"user applies to driver = 'raw_exec'"):
        config(driver="docker", user="yurt")


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ({"type": "nfs", "source": "x"}, r"type"),
        ({"type": "host", "source": ""}, r"source"),
        ({"type": "host", "source": "x", "access_mode": "multi-node-multi-writer"}, "CSI"),
        ({"type": "csi", "source": "x", "access_mode": "single-node-writer"}, "access_mode"),
        ({"type": "csi", "source": "x", "access_mode": "multi-node-reader-only"}, "read_only"),
    ],
)
def test_bad_volumes_are_refused(volume: dict[str, Any], message: str) -> None:
    """Volume settings Nomad would refuse (or that runners of many nodes cannot share)."""
    with pytest.raises(ConfigError, match=message):
        config(driver="docker", volumes={"*": volume})


def test_volume_keys_are_app_ids() -> None:
    """A volume key is 'owner/app' or '*'."""
    with pytest.raises(ConfigError, match=r"not app ids"):
        config(driver="docker", volumes={"llm": {"type": "host", "source": "x"}})


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ({"attribute": "${node.class}", "operator": "~", "value": "x"}, "operator"),
        ({"attribute": "${node.class}", "operator": "="}, "needs a value"),
        ({"attribute": "${meta.x}", "operator": "is_set", "value": "1"}, "takes no value"),
        ({"operator": "=", "value": "x"}, "needs an attribute"),
        ({"attribute": "x", "operator": "=", "value": "y", "Operand": "="}, r"0\.Operand"),
    ],
)
def test_bad_constraints_are_refused(constraint: dict[str, Any], message: str) -> None:
    """A constraint Nomad's Constraint.Validate would refuse fails at start."""
    with pytest.raises(ConfigError, match=message):
        build_server_config(
            {"data_dir": "/nonexistent", "machines": {"CPU": {"constraints": [constraint]}}},
            {},
            environ={},
        )
