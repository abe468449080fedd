"""Deployed apps and their payloads, kept in the data dir so that a restarted server serves them.

Layout: ``payloads/<sha256>.yurt`` and ``apps/<owner>/<app>.json``, one file per app holding its
current spec and every revision it has had. Each write goes to a temporary file renamed into
place, so a killed server leaves either the old or the new file, never half of one. Every file
is its owner's only (``0600``, directories ``0700``): payloads are user code.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from yurt.errors import PayloadError
from yurt.packaging import PayloadHeader, read_header
from yurt.privatefs import load_secret, write_atomic
from yurt.spec import AppSpec

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Revision(BaseModel):
    """One deployed revision of an app."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str
    deployed_at: float  # Unix time

    @property
    def revision(self) -> str:
        """The short revision id, as payload headers give it."""
        return self.sha256[:12]


class Deployment(BaseModel):
    """An app as the server serves it: its spec and its revisions, the current one last."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: str  # owner/app_name
    spec: AppSpec
    revisions: tuple[Revision, ...]

    @property
    def current(self) -> Revision:
        """The revision being served."""
        return self.revisions[-1]


@dataclass(frozen=True, slots=True)
class Removal:
    """What an undeploy did: the app as it was, and how many waiting requests it failed."""

    deployment: Deployment
    failed: int


def is_sha256(value: str) -> bool:
    """A payload digest as the server names payloads: 64 lowercase hex digits."""
    return bool(_SHA256.match(value))


class AppStore:
    """Payloads and deployments under ``data_dir``, and the tokens runners fetch payloads with."""

    def __init__(self, data_dir: Path, secret: bytes | Path) -> None:
        """``secret``: the key tokens are made with, or the file that keeps it, read (and made,
        ``load_secret``) at the first token, once the server has made its data dir private
        and locked it."""
        self.payloads = data_dir / "payloads"
        self.apps = data_dir / "apps"
        self._key = secret

    def open(self) -> None:
        """Read (or make) the key now, so that a key file that is no key fails the start."""
        _ = self._secret

    @property
    def _secret(self) -> bytes:
        if isinstance(self._key, Path):
            self._key = load_secret(self._key)
        return self._key

    # -- payloads --------------------------------------------------------------------------

    def put_payload(self, data: bytes, header: PayloadHeader | None = None) -> PayloadHeader:
        """Keep a payload; raises ``PayloadError`` when it is not one or its digest is wrong.

        ``header``: the one ``read_header(data)`` already gave (saves hashing it twice).
        """
        if header is None:
            header, _ = read_header(data)
        path = self.payloads / f"{header.sha256}.yurt"
        if not path.exists():
            write_atomic(path, data)
        return header

    def payload_path(self, sha256: str) -> Path | None:
        """Where the payload with this digest is, if the server has it."""
        if not is_sha256(sha256):
            return None
        path = self.payloads / f"{sha256}.yurt"
        return path if path.is_file() else None

    def header(self, sha256: str) -> PayloadHeader:
        """The header of a kept payload."""
        path = self.payload_path(sha256)
        if path is None:
            raise PayloadError(f"no payload {sha256[:12]} on this server; upload it first")
        return read_header(path.read_bytes())[0]

    def token(self, sha256: str) -> str:
        """The bearer token that lets a runner download this payload, and only this one."""
        return hmac.new(self._secret, b"payload:" + sha256.encode(), hashlib.sha256).hexdigest()

    def runner_token(self, job: str) -> str:
        """The token an app's runners on a cluster ask the router for (``yurt.runner.token``),
        made for its job: computed again by whoever holds the server's secret, kept nowhere."""
        return hmac.new(self._secret, b"runner:" + job.encode(), hashlib.sha256).hexdigest()

    # -- deployments -----------------------------------------------------------------------

    def _path(self, app_id: str) -> Path:
        owner, _, app_name = app_id.partition("/")
        return self.apps / owner / f"{app_name}.json"

    def get(self, app_id: str) -> Deployment | None:
        """The deployment of an app, if any."""
        path = self._path(app_id)
        if not path.is_file():
            return None
        return Deployment.model_validate_json(path.read_bytes())

    def save(self, app_id: str, spec: AppSpec, sha256: str, now: float) -> Deployment:
        """Record ``sha256`` as the app's current revision (a redeploy of it is a no-op)."""
        old = self.get(app_id)
        revisions = old.revisions if old is not None else ()
        if not revisions or revisions[-1].sha256 != sha256 or old is None or old.spec != spec:
            revisions = (*revisions, Revision(sha256=sha256, deployed_at=now))
        deployment = Deployment(app_id=app_id, spec=spec, revisions=revisions)
        write_atomic(self._path(app_id), deployment.model_dump_json(indent=1).encode())
        return deployment

    def forget(self, app_id: str) -> Deployment | None:
        """Forget an app (a restarted server no longer serves it); returns what it was.

        The payloads of its revisions go too, unless another app's revision is the same
        payload (payloads are named by their digest, so two apps may share one).
        """
        found = self.get(app_id)
        if found is None:
            return None
        self._path(app_id).unlink(missing_ok=True)
        kept = {r.sha256 for d in self.all() for r in d.revisions}
        for sha256 in {r.sha256 for r in found.revisions} - kept:
            (self.payloads / f"{sha256}.yurt").unlink(missing_ok=True)
        return found

    def all(self) -> list[Deployment]:
        """Every deployment, by app id."""
        found = [
            Deployment.model_validate_json(p.read_bytes())
            for p in sorted(self.apps.glob("*/*.json"))
        ]
        return sorted(found, key=lambda d: d.app_id)
