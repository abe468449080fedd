"""The Nomad backend refuses an app that requires secrets, rather than starting its runners
without them (it does not carry secrets yet)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import yurt
from yurt.backends.nomad import backend as nb
from yurt.config import NomadConfig
from yurt.errors import SchedulingError
from yurt.spec import build_spec


class NeedsKey(yurt.App):
    required_secrets = ["HF_TOKEN"]

    @yurt.endpoint("/")
    def run(self) -> dict[str, str]:
        return {}


class NoCalls:
    """A Nomad client that fails the test on any call: the refusal comes first."""

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"the Nomad client was called ({name}) for an app it cannot serve")


async def test_required_secrets_are_refused_before_any_call(tmp_path: Path) -> None:
    """``ensure_app`` raises SchedulingError naming the secret, and calls Nomad for nothing."""
    config = NomadConfig(addr="http://127.0.0.1:1", python=sys.executable)
    backend = nb.NomadBackend(config, lambda app_id, header: None, client=NoCalls())  # type: ignore[arg-type]
    with pytest.raises(SchedulingError, match=r"\['HF_TOKEN'\].*does not carry secrets"):
        await backend.ensure_app("default/needs-key", build_spec(NeedsKey), tmp_path / "p.yurt")
