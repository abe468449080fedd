"""The runner task of an app with requirements or required secrets: its bootstrap, its cache of
environments, an app's own image, and settings Nomad could not honour."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

import yurt
from yurt.backends.nomad.jobspec import build_job
from yurt.backends.nomad.naming import PayloadRef
from yurt.config import EnvsConfig, NomadConfig, VolumeConfig
from yurt.errors import AppDefinitionError
from yurt.spec import build_spec

from doubles.validate import problems

PAYLOAD = PayloadRef(url="http://yurt:8080/p", sha256="cd" * 32, token="tok", revision="cd" * 6)
RAW = NomadConfig(python="/opt/yurt/bin/python")
DOCKER = NomadConfig(driver="docker")
OFFLINE = EnvsConfig(pip_args=("--no-index", "--find-links", "/srv/wheels"))


class Plain(yurt.App):
    @yurt.endpoint("/")
    def run(self) -> dict[str, str]:
        return {}


class Needs(Plain):
    requirements = ["humanize>=4"]
    required_secrets = ["HF_TOKEN"]


class Imaged(Needs):
    image = "ghcr.io/me/app:1"


def task(cls: type[yurt.App], config: NomadConfig, envs: EnvsConfig = OFFLINE) -> Any:
    job = build_job("o/a", build_spec(cls), PAYLOAD, config, envs=envs)
    assert problems({"Job": job}) == []
    return job["TaskGroups"][0]["Tasks"][0]


def test_an_app_without_requirements_or_secrets_starts_the_runner_at_once() -> None:
    """No bootstrap, no added cold start: ``python -m yurt.runner`` as before."""
    assert task(Plain, RAW)["Config"]["args"][:2] == ["-m", "yurt.runner"]
    assert "entrypoint" not in task(Plain, DOCKER)["Config"]


def test_requirements_and_secrets_go_to_the_bootstrap_before_the_runners_arguments() -> None:
    """The bootstrap gets the requirements, the installer and its arguments, the secrets to
    check; the runner's own arguments follow ``--``; the alloc dir caches by default."""
    args = task(Needs, RAW)["Config"]["args"]
    at = args.index("--")
    assert args[:2] == ["-m", "yurt.runner.bootstrap"]
    assert args[2:at] == [
        "--requirements",
        '["humanize>=4"]',
        "--installer",
        "pip",
        "--pip-arg=--no-index",
        "--pip-arg=--find-links",
        "--pip-arg=/srv/wheels",
        "--require-secret",
        "HF_TOKEN",
    ]
    assert args[at + 1 : at + 3] == ["--payload-url", PAYLOAD.url]


def test_a_node_directory_caches_environments_for_raw_exec() -> None:
    """``envs_dir`` is where every runner of a node builds and finds environments."""
    config = RAW.model_copy(update={"envs_dir": "/var/lib/yurt/envs"})
    args = task(Needs, config)["Config"]["args"]
    assert args[args.index("--envs-dir") + 1] == "/var/lib/yurt/envs"


def test_docker_mounts_the_envs_volume_and_overrides_the_entrypoint() -> None:
    """With docker the bootstrap is the entrypoint, and ``envs_volume`` is mounted where it
    builds; an app without requirements gets no such volume."""
    volume = VolumeConfig(type="host", source="yurt-envs")
    config = DOCKER.model_copy(update={"envs_volume": volume})
    job = build_job("o/a", build_spec(Needs), PAYLOAD, config, envs=OFFLINE)
    assert problems({"Job": job}) == []
    group = job["TaskGroups"][0]
    t = group["Tasks"][0]
    assert t["Config"]["entrypoint"] == ["python", "-m", "yurt.runner.bootstrap"]
    assert t["Config"]["args"][t["Config"]["args"].index("--envs-dir") + 1] == "/yurt-envs"
    assert group["Volumes"]["yurt-envs"]["Source"] == "yurt-envs"
    assert [m["Destination"] for m in t["VolumeMounts"]] == ["/yurt-envs"]
    plain = build_job("o/a", build_spec(Plain), PAYLOAD, config)["TaskGroups"][0]
    assert "Volumes" not in plain


def test_an_apps_image_is_its_environment() -> None:
    """With docker, an app's ``image`` replaces the runner image and nothing is built; the
    bootstrap still checks its secrets."""
    t = task(Imaged, DOCKER)
    assert t["Config"]["image"] == "ghcr.io/me/app:1"
    assert "--requirements" not in t["Config"]["args"]
    assert t["Config"]["args"][:2] == ["--require-secret", "HF_TOKEN"]
    assert t["Config"]["entrypoint"] == ["python", "-m", "yurt.runner.bootstrap"]

    class OnlyImage(Plain):
        image = "ghcr.io/me/app:1"

    # The image needs no entrypoint of its own: the task names the runner.
    assert task(OnlyImage, DOCKER)["Config"]["entrypoint"] == ["python", "-m", "yurt.runner"]
    # raw_exec has no image: it builds the requirements.
    assert "--requirements" in task(Imaged, RAW)["Config"]["args"]


def test_an_image_that_is_not_a_reference_fails_at_class_creation() -> None:
    """``image`` is a string naming an image; anything else names the fix."""
    with pytest.raises(AppDefinitionError, match="container image reference"):

        class Bad(Plain):
            image = " spaced "


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"envs_dir": "relative/envs"}, "absolute path"),
        ({"driver": "docker", "envs_dir": "/envs"}, "absolute path on the nodes"),
        ({"envs_volume": {"type": "host", "source": "v"}}, "envs_volume needs driver"),
        ({"secrets_path": "nomad/jobs/x"}, "keeps 'nomad/'"),
        ({"secrets_path": "with space"}, "should match pattern"),
    ],
)
def test_settings_nomad_cannot_honour_are_refused(fields: dict[str, Any], error: str) -> None:
    """A setting that would fail on the cluster fails in the configuration, saying why."""
    with pytest.raises(ValidationError, match=error):
        NomadConfig(**fields)


def test_the_job_body_names_no_secret_and_no_token() -> None:
    """The requirements travel in the job; the token and secrets do not."""
    body = json.dumps(build_job("o/a", build_spec(Needs), PAYLOAD, RAW, envs=OFFLINE))
    assert PAYLOAD.token not in body
    assert "humanize>=4" in body
