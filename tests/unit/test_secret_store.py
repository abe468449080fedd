"""The secret store: names checked, values sealed at rest in an owner-only file, and a value
that does not open refused with a message that names the secret, never its value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yurt.admin.secrets import SecretStore
from yurt.errors import ConfigError
from yurt.secret_rules import name_problem, value_problem


@pytest.mark.parametrize("name", ["HF_TOKEN", "_X", "a1", "OPENAI_API_KEY"])
def test_names_of_environment_variables_are_accepted(name: str) -> None:
    """An environment variable's name that configures nothing of yurt's is a secret's name."""
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "not an environment variable name"),
        ("1ABC", "not an environment variable name"),
        ("A-B", "not an environment variable name"),
        ("A B", "not an environment variable name"),
        ("X" * 257, "not an environment variable name"),
        ("NOMAD_TOKEN", "yurt, Nomad or Consul"),
        ("CONSUL_HTTP_TOKEN", "yurt, Nomad or Consul"),
        ("YURT_ADMIN_TOKEN", "yurt, Nomad or Consul"),
        ("YURT_ANYTHING", "yurt, Nomad or Consul"),
        ("CUDA_VISIBLE_DEVICES", "yurt, Nomad or Consul"),
        ("PYTHONUNBUFFERED", "yurt, Nomad or Consul"),
    ],
)
def test_other_names_are_refused(name: str, why: str) -> None:
    """Names no environment variable has, or that yurt, Nomad, Consul or the runner's own
    environment use, are refused with the rule."""
    problem = name_problem(name)
    assert problem is not None and why in problem


def test_a_name_holding_a_value_is_refused_without_quoting_it() -> None:
    """``NAME=VALUE`` sent as a name is refused, and the message does not show the value."""
    problem = name_problem("HF_TOKEN=hf_secret")
    assert problem is not None and "hf_secret" not in problem and "'='" in problem


def test_values_that_cannot_be_variables_are_refused_without_quoting_them() -> None:
    """A NUL or a value past 64 KiB is refused; the message does not hold the value."""
    for value in ("abc\x00def", "z" * (64 * 1024 + 1)):
        problem = value_problem(value)
        assert problem is not None and value not in problem


def test_set_list_values_unset(tmp_path: Path) -> None:
    """A set secret is listed by name and time, opens to its value, and is gone once unset."""
    store = SecretStore(tmp_path)
    assert store.values() == {} and store.list() == []
    assert store.set("HF_TOKEN", "hf_one", now=100.0) is True
    assert store.set("HF_TOKEN", "hf_two", now=200.0) is False
    assert store.set("OTHER", "x", now=150.0) is True
    assert [(s.name, s.set_at) for s in store.list()] == [("HF_TOKEN", 200.0), ("OTHER", 150.0)]
    assert store.values() == {"HF_TOKEN": "hf_two", "OTHER": "x"}
    assert SecretStore(tmp_path).values() == store.values()  # a restarted server reads them
    assert store.unset("HF_TOKEN") is True and store.unset("HF_TOKEN") is False
    assert store.values() == {"OTHER": "x"}


def test_values_are_sealed_in_owner_only_files(tmp_path: Path) -> None:
    """The file and its key are 0600, and the file holds no value in clear (nor in base64)."""
    import base64

    value = "sk-live-0123456789abcdef"
    SecretStore(tmp_path).set("API_KEY", value, now=1.0)
    for name in ("secrets.json", "secrets-key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    raw = (tmp_path / "secrets.json").read_bytes()
    assert value.encode() not in raw and base64.b64encode(value.encode()) not in raw
    assert b"API_KEY" in raw


def test_a_value_moved_under_another_name_does_not_open(tmp_path: Path) -> None:
    """The name is bound to its value: swapping sealed values between names is detected."""
    store = SecretStore(tmp_path)
    store.set("A", "value-of-a", now=1.0)
    store.set("B", "value-of-b", now=1.0)
    entries = json.loads((tmp_path / "secrets.json").read_text())
    entries["A"]["sealed"], entries["B"]["sealed"] = entries["B"]["sealed"], entries["A"]["sealed"]
    (tmp_path / "secrets.json").write_text(json.dumps(entries))
    with pytest.raises(ConfigError, match="does not open") as caught:
        SecretStore(tmp_path).values()
    assert "value-of" not in str(caught.value)


def test_another_key_does_not_open_the_values(tmp_path: Path) -> None:
    """With the key file replaced, the values do not open and the error says how to recover."""
    SecretStore(tmp_path).set("A", "value-of-a", now=1.0)
    (tmp_path / "secrets-key").write_text("00" * 32)
    with pytest.raises(ConfigError, match="yurt secrets set A"):
        SecretStore(tmp_path).values()


@pytest.mark.parametrize("text", ["{not json", "[]", '{"A": {"set_at": 1}}', '{"A": "x"}'])
def test_a_damaged_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    """A file that is not one of secrets is a ConfigError naming it, for every reader."""
    (tmp_path / "secrets.json").write_text(text)
    store = SecretStore(tmp_path)
    for read in (store.values, store.list, lambda: store.set("B", "v", now=1.0)):
        with pytest.raises(ConfigError, match=r"secrets\.json"):
            read()


def test_a_damaged_sealed_value_does_not_open(tmp_path: Path) -> None:
    """A sealed value that is not base64 is refused as one that does not open."""
    SecretStore(tmp_path).set("A", "v", now=1.0)
    (tmp_path / "secrets.json").write_text('{"A": {"set_at": 1.0, "sealed": "%%%"}}')
    with pytest.raises(ConfigError, match="does not open"):
        SecretStore(tmp_path).values()


@pytest.mark.parametrize("key", ["zz" * 32, "00" * 16])
def test_a_key_file_that_is_no_key_is_refused(tmp_path: Path, key: str) -> None:
    """A key file that is not 64 hex digits is a ConfigError naming it."""
    (tmp_path / "secrets-key").write_text(key)
    with pytest.raises(ConfigError, match="not a 256-bit key"):
        SecretStore(tmp_path).set("A", "v", now=1.0)
