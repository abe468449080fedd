"""Secrets: named values the server gives every runner as environment variables.

Server-wide, as fal's are per account: every app the server serves sees every secret set on it
(``yurt secrets set HF_TOKEN``); an App lists the ones it cannot start without in
``required_secrets``. They live in ``DATA_DIR/secrets.json`` (``0600``), each value sealed with
AES-256-GCM under a key of its own (``DATA_DIR/secrets-key``), the secret's name bound to its
value as associated data, so that the file alone (a backup, a copy of the data dir without its
key) gives no value away and a value moved under another name does not open.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from yurt.errors import ConfigError
from yurt.privatefs import load_secret, write_atomic
from yurt.secret_rules import SecretInfo, name_problem, value_problem

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE = 12  # bytes: the size AES-GCM is specified for (NIST SP 800-38D)


class _Entry(BaseModel):
    """One secret as the file keeps it: when it was set, and nonce + sealed value (base64)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    set_at: float
    sealed: str


_ENTRIES = TypeAdapter(dict[str, _Entry])


class SecretStore:
    """The server's secrets under ``data_dir``; the key is read (or made) on first use."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "secrets.json"
        self.key_path = data_dir / "secrets-key"
        self._cipher: AESGCM | None = None

    def _aead(self) -> AESGCM:
        if self._cipher is None:
            # Imported at first use (~17 ms): a server that keeps no secrets never pays it.
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            try:
                key = bytes.fromhex(load_secret(self.key_path).decode())
            except ValueError:
                key = b""
            if len(key) != 32:
                raise ConfigError(f"the key file {self.key_path} is not a 256-bit key in hex")
            self._cipher = AESGCM(key)
        return self._cipher

    def _read(self) -> dict[str, _Entry]:
        try:
            return _ENTRIES.validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValidationError as exc:  # its messages quote no input (include_input=False)
            raise ConfigError(
                f"{self.path} is not a file of secrets ({exc.error_count()} errors); move it "
                "away and set the secrets again"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read the secrets in {self.path}: {exc}") from exc

    def _write(self, entries: dict[str, _Entry]) -> None:
        write_atomic(self.path, _ENTRIES.dump_json(entries, indent=1))

    def set(self, name: str, value: str, now: float) -> bool:
        """Set (or replace) a secret; True when it is new. Raises ``ConfigError`` for a name or
        value that cannot be one (``name_problem``, ``value_problem``)."""
        problem = name_problem(name) or value_problem(value)
        if problem is not None:
            raise ConfigError(problem)
        nonce = os.urandom(_NONCE)
        sealed = self._aead().encrypt(nonce, value.encode(), name.encode())
        entries = self._read()
        new = name not in entries
        entries[name] = _Entry(set_at=now, sealed=base64.b64encode(nonce + sealed).decode())
        self._write(dict(sorted(entries.items())))
        return new

    def unset(self, name: str) -> bool:
        """Remove a secret; False when there was none of that name."""
        entries = self._read()
        if entries.pop(name, None) is None:
            return False
        self._write(entries)
        return True

    def list(self) -> list[SecretInfo]:
        """Every secret's name and when it was set, by name."""
        return [SecretInfo(name, entry.set_at) for name, entry in sorted(self._read().items())]

    def values(self) -> dict[str, str]:
        """Every secret's value by name, for a runner's environment. Raises ``ConfigError``
        when one does not open with the key (the key file was replaced or the file altered)."""
        entries = self._read()
        if not entries:
            return {}
        from cryptography.exceptions import InvalidTag

        aead, out = self._aead(), {}
        for name, entry in entries.items():
            try:
                blob = base64.b64decode(entry.sealed, validate=True)
                out[name] = aead.decrypt(blob[:_NONCE], blob[_NONCE:], name.encode()).decode()
            except (InvalidTag, ValueError) as exc:
                raise ConfigError(
                    f"the secret {name} does not open with {self.key_path} (the key or "
                    f"{self.path} was changed); set it again with `yurt secrets set {name}`"
                ) from exc
        return out


class SecretKeeper(Protocol):
    """Where the admin API keeps the server's secrets: the data dir (``LocalSecrets``) or
    Nomad Variables (``yurt.backends.nomad.secrets.NomadSecrets``)."""

    async def set_secret(self, name: str, value: str, now: float) -> bool:
        """Set or replace a secret; True when it is new."""

    async def unset_secret(self, name: str) -> bool:
        """Remove a secret; False when there was none."""

    async def list_secrets(self) -> list[SecretInfo]:
        """Every secret's name and when it was set, never a value."""


class LocalSecrets:
    """The data dir's ``SecretStore`` as a ``SecretKeeper``: its file work off the event loop."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store

    async def set_secret(self, name: str, value: str, now: float) -> bool:
        """``SecretStore.set`` on a thread."""
        return await asyncio.to_thread(self.store.set, name, value, now)

    async def unset_secret(self, name: str) -> bool:
        """``SecretStore.unset`` on a thread."""
        return await asyncio.to_thread(self.store.unset, name)

    async def list_secrets(self) -> list[SecretInfo]:
        """``SecretStore.list`` on a thread."""
        return await asyncio.to_thread(self.store.list)
