"""What a runner gets of the control plane's environment: what an app needs, no secret."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

import yurt
import yurt.config
from yurt.backends.localproc import runner_env
from yurt.backends.nomad.jobspec import build_job, register_body
from yurt.backends.nomad.naming import PayloadRef
from yurt.config import CONFIG_ENV, LocalBackendConfig, NomadConfig
from yurt.spec import build_spec

# Every variable yurt.config reads, found in its source: one added there is checked here too.
CONFIG_SOURCE = "".join(p.read_text() for p in Path(yurt.config.__file__).parent.glob("*.py"))
CONFIG_VARS = sorted(
    set(re.findall(r"""["']((?:YURT|NOMAD|CONSUL|XDG|CUDA)_[A-Z_]+)["']""", CONFIG_SOURCE))
)

CONTROL_PLANE = {
    "YURT_ADMIN_TOKEN": "admin-secret",
    "YURT_DATA_DIR": "/srv/yurt",
    "YURT_SERVER": "http://10.0.0.1:8080",
    "NOMAD_TOKEN": "nomad-secret",
    "NOMAD_ADDR": "https://nomad:4646",
    "NOMAD_NAMESPACE": "prod",
    "NOMAD_REGION": "eu",
    "CONSUL_HTTP_TOKEN": "consul-secret",
    "CONSUL_HTTP_ADDR": "consul:8500",
    "CONSUL_HTTP_SSL": "true",
    "VAULT_TOKEN": "vault-secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "GITHUB_TOKEN": "gh-secret",
    "YURT_WEBHOOK_SECRET": "hook-secret",
    "YURT_SOME_API_KEY": "key-secret",
}

FOR_APPS = {
    "PATH": "/usr/bin",
    "HOME": "/home/u",
    "USER": "u",
    "LOGNAME": "u",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "LC_CTYPE": "C.UTF-8",
    "TZ": "UTC",
    "TMPDIR": "/tmp/u",
    "http_proxy": "http://proxy:3128",
    "https_proxy": "http://proxy:3128",
    "no_proxy": "localhost",
    "HTTP_PROXY": "http://proxy:3128",
    "HTTPS_PROXY": "http://proxy:3128",
    "NO_PROXY": "localhost",
    "CUDA_HOME": "/usr/local/cuda",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    "PYTHONPATH": "/src",
    "VIRTUAL_ENV": "/venv",
    "YURT_TEST_GATE": "/tmp/gate",
}


def test_an_app_gets_what_it_needs_and_none_of_the_control_planes_secrets() -> None:
    """Locale, proxies, CUDA, the Python path and YURT_* for runners pass; tokens do not."""
    env = runner_env({**CONTROL_PLANE, **FOR_APPS, "CUDA_VISIBLE_DEVICES": "0,1"}, ["GPU-a"])
    assert env == {**FOR_APPS, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "GPU-a"}


@pytest.mark.parametrize("name", CONFIG_VARS)
def test_nothing_yurt_reads_as_configuration_reaches_a_runner(name: str) -> None:
    """Each variable yurt.config reads stays out of the runner's environment."""
    env = runner_env({name: "sentinel-value", "PATH": "/bin"}, [])
    assert "sentinel-value" not in env.values()


def test_config_env_names_every_variable_config_reads() -> None:
    """CONFIG_ENV lists what yurt.config reads (the source scan finds the credentials too)."""
    assert {"YURT_ADMIN_TOKEN", "YURT_DATA_DIR", "NOMAD_TOKEN", "CONSUL_HTTP_TOKEN"} <= set(
        CONFIG_VARS
    )
    assert set(CONFIG_VARS) <= CONFIG_ENV


def test_pass_env_lets_an_app_have_its_own_keys_but_never_yurts() -> None:
    """Names in [local] pass_env pass; yurt's own configuration is refused, in the config too."""
    env = runner_env({"HF_TOKEN": "hf", "OTHER": "x", "YURT_ADMIN_TOKEN": "a"}, [], ("HF_TOKEN",))
    assert env == {"HF_TOKEN": "hf", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    assert "YURT_ADMIN_TOKEN" not in runner_env({"YURT_ADMIN_TOKEN": "a"}, [], CONFIG_ENV)
    assert LocalBackendConfig(pass_env=("HF_TOKEN",)).pass_env == ("HF_TOKEN",)
    for name in ("YURT_ADMIN_TOKEN", "NOMAD_TOKEN", "CONSUL_HTTP_TOKEN"):
        with pytest.raises(ValidationError, match="configure yurt itself"):
            LocalBackendConfig(pass_env=("HF_TOKEN", name))


def test_an_unknown_variable_is_dropped() -> None:
    """The list is an allow-list: a variable nobody named stays behind."""
    assert runner_env({"SOMETHING_ELSE": "x", "LD_PRELOAD": "/evil.so"}, []) == {
        "PYTHONUNBUFFERED": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }


class Hello(yurt.App):
    @yurt.endpoint("/")
    def hi(self) -> dict[str, str]:
        return {}


@pytest.mark.parametrize("driver", ["raw_exec", "docker"])
def test_the_nomad_job_carries_no_server_secret(driver: str) -> None:
    """A Nomad runner's job carries no server secret, nor its payload token (the job's
    Variable has it, read through the task's template)."""
    config = NomadConfig(driver=driver, python="/py", token="nomad-secret")  # type: ignore[arg-type]
    payload = PayloadRef(url="http://yurt:8080/p", sha256="ab" * 32, token="p-tok", revision="r")
    body = json.dumps(register_body(build_job("o/hello", build_spec(Hello), payload, config)))
    assert "nomad-secret" not in body
    assert "p-tok" not in body
    [task] = json.loads(body)["Job"]["TaskGroups"][0]["Tasks"]
    assert task["Env"] == {"PYTHONUNBUFFERED": "1"}
    assert [t["DestPath"] for t in task["Templates"]] == ["secrets/yurt.env"]
