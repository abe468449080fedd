"""Every value a config file may hold is checked by the models, as a flag's would be."""

from __future__ import annotations

from pathlib import Path

import pytest

from yurt.config import LocalBackendConfig, ServerConfig, build_server_config, read_config_file
from yurt.errors import ConfigError


def from_toml(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ServerConfig:
    """The configuration a TOML file with ``text`` gives, under ``environ`` (none by default)."""
    path = tmp_path / "yurt.toml"
    path.write_text(text)
    return build_server_config(
        read_config_file(path), {"data_dir": str(tmp_path)}, environ=environ or {}
    )


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('[router]\npublic_url = "ftp://x/?q"', "router.public_url"),
        ('[router]\npublic_url = "https://x/?q=1"', "query or fragment"),
        ('[router]\npublic_url = "/just/a/path"', "router.public_url"),
        ('[router]\npublic_url = "https://x:99999"', "invalid port"),
        ('[router]\nowner = "a/b"', "router.owner"),
        ('[router]\nowner = ".."', "router.owner"),
        ('[router]\nhost = ""', "router.host"),
        ("[router]\nkeepalive_timeout = inf", "router.keepalive_timeout"),
        ("[scheduler]\ninterval = nan", "scheduler.interval"),
        ("[queue.webhooks]\ntimeout = inf", "queue.webhooks.timeout"),
        ('[queue.webhooks]\nsecret = ""', "queue.webhooks.secret"),
        ("[keys]\nburst = 5", "set rate too"),
        ('admin_token = ""', "admin_token"),
        ('[local]\nhost = ""', "local.host"),
        ('[local]\npass_env = ["HF_TOKEN", "A=B"]', "not variable names"),
        ('[nomad]\nuser = ""', "nomad.user"),
        ('[machines.GPU-H100]\nnode_pool = ""', "node_pool"),
        (
            '[nomad]\naddr = "ftp://nomad:4646"',
            "nomad addr 'ftp://nomad:4646' is not an http(s) URL",
        ),
        ('[nomad]\naddr = "http://nomad:70000"', "invalid port"),
        ('[nomad]\npython = "python3"', "not an absolute path"),
        ('[nomad]\nnamespace = ""', "nomad.namespace"),
        ('[nomad]\njob_prefix = "a b"', "nomad.job_prefix"),
        ('[consul]\naddr = "consul:notaport"', "consul addr"),
        ('[consul]\nrouter_service = ""', "consul.router_service"),
    ],
)
def test_a_bad_value_in_the_file_is_refused_naming_it(
    tmp_path: Path, toml: str, named: str
) -> None:
    """A value the server could not use fails when the file is read, naming the field."""
    with pytest.raises(ConfigError, match="invalid configuration") as caught:
        from_toml(tmp_path, toml)
    assert named in str(caught.value)


def test_credentials_in_the_public_url_are_refused_unshown(tmp_path: Path) -> None:
    """A public URL with a password is refused without the password in the message."""
    with pytest.raises(ConfigError, match="without credentials") as caught:
        from_toml(tmp_path, '[router]\npublic_url = "https://u:hunter2@x"')
    assert "hunter2" not in str(caught.value)


def test_good_values_pass_and_a_public_url_loses_its_slash(tmp_path: Path) -> None:
    """What the checks allow: a base URL with a path, a bare host:port agent, a rate and burst."""
    config = from_toml(
        tmp_path,
        '[router]\npublic_url = "https://example.com/yurt/"\nowner = "team-a"\n'
        '[consul]\naddr = "consul:8500"\n[keys]\nrate = 1.0\nburst = 3\n',
    )
    assert config.router.public_url == "https://example.com/yurt"
    assert config.consul.addr == "consul:8500"


def test_gpus_come_from_the_environment_and_the_file_wins(tmp_path: Path) -> None:
    """``$CUDA_VISIBLE_DEVICES`` sets ``[local] gpus`` when the file does not; the model's own
    default reads no environment."""
    env = {"CUDA_VISIBLE_DEVICES": "1,2"}
    assert from_toml(tmp_path, "", env).local.gpus == "1,2"
    hidden = from_toml(tmp_path, "", {"CUDA_VISIBLE_DEVICES": ""})
    assert hidden.local.gpus == ""
    chosen = from_toml(tmp_path, '[local]\ngpus = "0"', env)
    assert chosen.local.gpus == "0"
    assert from_toml(tmp_path, "").local.gpus is None


def test_a_model_default_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model built in code gets the same defaults whatever the process environment holds."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert LocalBackendConfig().gpus is None
