"""``required_secrets``: an App's list of secret names, checked when the class is described."""

from __future__ import annotations

import pytest

import yurt
from yurt.errors import AppDefinitionError
from yurt.spec import AppSpec, build_spec


class _Base(yurt.App):
    @yurt.endpoint("/")
    def run(self) -> dict[str, str]:
        return {}


def test_required_secrets_reach_the_spec_sorted_once() -> None:
    """The names are kept, sorted and without repeats; none by default."""

    class Needs(_Base):
        required_secrets = ["HF_TOKEN", "API_KEY", "HF_TOKEN"]

    assert build_spec(Needs).required_secrets == ["API_KEY", "HF_TOKEN"]
    assert build_spec(_Base).required_secrets == []


@pytest.mark.parametrize("value", ["HF_TOKEN", ["HF-TOKEN"], [3], None])
def test_required_secrets_must_be_a_list_of_names(value: object) -> None:
    """A string, a name no environment variable has or a non-string is an AppDefinitionError."""
    with pytest.raises(AppDefinitionError, match="required_secrets must be a list"):
        build_spec(type("Bad", (_Base,), {"required_secrets": value}))


def test_a_spec_saved_before_required_secrets_still_loads() -> None:
    """A deployment saved by an older server (no required_secrets field) loads with none."""
    saved = build_spec(_Base).model_dump(mode="json")
    del saved["required_secrets"]
    assert AppSpec.model_validate(saved).required_secrets == []
