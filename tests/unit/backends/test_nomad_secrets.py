"""``yurt secrets`` on a Nomad server: Variables, as the double keeps them the way Nomad does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from yurt.backends.nomad.client import NomadClient
from yurt.backends.nomad.secrets import JobVariables, NomadSecrets, SecretsTooLarge
from yurt.config import NomadConfig
from yurt.errors import ConfigError

from doubles import NomadDouble


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[NomadDouble, NomadClient]]:
    async with NomadDouble(None, tmp_path / "n") as nomad:
        c = NomadClient(NomadConfig(addr=nomad.url, namespace="team", retries=0))
        try:
            yield nomad, c
        finally:
            await c.close()


async def test_set_list_unset_keep_one_variable_per_secret(
    client: tuple[NomadDouble, NomadClient],
) -> None:
    """Each secret is a Variable under the prefix in the configured namespace; the listing
    reads metadata only; every change rewrites the job Variables."""
    nomad, c = client
    secrets = NomadSecrets(c, "yurt/secrets")
    jobs = JobVariables(c, secrets)
    secrets.on_change = jobs.refresh
    await jobs.write("yurt-o-a", "tok")
    assert await secrets.set_secret("HF_TOKEN", "v1", now=0.0) is True
    assert await secrets.set_secret("HF_TOKEN", "v2", now=0.0) is False
    assert await secrets.set_secret("OTHER", "x", now=0.0) is True
    assert [s.name for s in await secrets.list_secrets()] == ["HF_TOKEN", "OTHER"]
    assert await secrets.values() == {"HF_TOKEN": "v2", "OTHER": "x"}
    job = nomad.variables.get("team", "nomad/jobs/yurt-o-a")
    assert job is not None
    assert job.items == {"HF_TOKEN": "v2", "OTHER": "x", "YURT_PAYLOAD_TOKEN": "tok"}
    assert nomad.variables.get("default", "yurt/secrets/HF_TOKEN") is None  # its namespace

    assert await secrets.unset_secret("HF_TOKEN") is True
    assert await secrets.unset_secret("HF_TOKEN") is False
    assert nomad.variables.get("team", "nomad/jobs/yurt-o-a").items == {  # type: ignore[union-attr]
        "OTHER": "x",
        "YURT_PAYLOAD_TOKEN": "tok",
    }
    await jobs.drop("yurt-o-a")
    assert nomad.variables.get("team", "nomad/jobs/yurt-o-a") is None


async def test_bad_names_and_secrets_too_large_for_a_job_are_refused(
    client: tuple[NomadDouble, NomadClient],
) -> None:
    """A name yurt reads itself is refused before any call; secrets that together would not
    fit one job's Variable (64 KiB) are refused, naming sizes and never a value."""
    nomad, c = client
    secrets = NomadSecrets(c, "yurt/secrets")
    with pytest.raises(ConfigError, match="yurt, Nomad or Consul"):
        await secrets.set_secret("NOMAD_TOKEN", "x", now=0.0)
    await secrets.set_secret("A", "a" * 40_000, now=0.0)
    with pytest.raises(SecretsTooLarge, match="bytes together") as caught:
        await secrets.set_secret("B", "b" * 30_000, now=0.0)
    assert "bbbb" not in str(caught.value)
    assert [s.name for s in await secrets.list_secrets()] == ["A"]
    assert nomad.variables.writes == [("team", "yurt/secrets/A")]
