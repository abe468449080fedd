"""Where a process finds the file store, and the URLs of the files in it. Pure but for
``from_environ``.

The backend tells each runner with three variables: ``YURT_FILES_DIR`` (the store's directory,
when the runner shares the router's disk, as on the local backend), ``YURT_FILES_URL`` (the
router's public URL, which file URLs start with) and ``YURT_FILES_TTL`` (seconds a stored file
is kept; empty: no expiry). A local runner of a store kept in S3 gets no directory but
``YURT_FILES_TOKEN``, the router's upload token, and posts its outputs to the router.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

FILES_DIR_ENV = "YURT_FILES_DIR"
FILES_URL_ENV = "YURT_FILES_URL"
FILES_TTL_ENV = "YURT_FILES_TTL"
FILES_TOKEN_ENV = "YURT_FILES_TOKEN"
# A runner with no shared disk proves its uploads with its payload's token (``yurt.runner.fetch``
# TOKEN_ENV) and the digest that token was made for.
PAYLOAD_TOKEN_ENV = "YURT_PAYLOAD_TOKEN"
PAYLOAD_SHA256_ENV = "YURT_PAYLOAD_SHA256"
PAYLOAD_HEADER = "X-Yurt-Payload-Sha256"
LIFECYCLE_HEADER = "X-Fal-Object-Lifecycle-Preference"

# The route files are served under, below the router's public URL.
FILES_PREFIX = "/files/"
UPLOAD_PATH = "/files/upload"
# A token: 32 characters of the URL-safe base64 alphabet (192 random bits).
TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


@dataclass(frozen=True)
class StoreLocation:
    """The store a runner writes to: ``directory`` on this machine, URLs under ``public_url``."""

    directory: Path | None
    public_url: str
    ttl: float | None

    def url(self, token: str, file_name: str) -> str:
        """The absolute URL of the file ``token`` named ``file_name``."""
        return file_url(self.public_url, token, file_name)

    def token_of(self, url: str) -> str | None:
        """The token of ``url`` when it names a file of this store, else None."""
        return token_of(self.public_url, url)


def file_url(public_url: str, token: str, file_name: str) -> str:
    """``<public_url>/files/<token>/<file_name>``, the name percent-encoded. Pure."""
    return f"{public_url.rstrip('/')}{FILES_PREFIX}{token}/{quote(file_name, safe='')}"


def token_of(public_url: str, url: str) -> str | None:
    """The token in ``url`` if it is a file URL under ``public_url``, else None. Pure."""
    base = public_url.rstrip("/") + FILES_PREFIX
    if not url.startswith(base):
        return None
    return parse_path(urlsplit(url).path)


def parse_path(path: str) -> str | None:
    """The token of a request path ``/files/<token>/<name>``, else None. Pure."""
    if not path.startswith(FILES_PREFIX):
        return None
    token, sep, name = path[len(FILES_PREFIX) :].partition("/")
    if not sep or not name or "/" in unquote(name) or not TOKEN.fullmatch(token):
        return None
    return token


def requested_ttl(ttl: float | None, preference: str | None) -> float | None:
    """The lifetime of a file whose request asked ``preference`` (fal's
    ``X-Fal-Object-Lifecycle-Preference``, ``{"expiration_duration_seconds": n}``): ``n`` when
    shorter than the store's ``ttl``, else ``ttl`` (longer, or no expiry, is not granted: the
    operator's lifetime is the longest). Pure."""
    try:
        asked = json.loads(preference)["expiration_duration_seconds"] if preference else None
    except (ValueError, TypeError, KeyError):
        asked = None
    if isinstance(asked, bool) or not isinstance(asked, int | float) or asked <= 0:
        return ttl
    return float(asked) if ttl is None else min(float(asked), ttl)


def location_env(
    directory: Path | None, public_url: str, ttl: float | None, upload_token: str | None = None
) -> dict[str, str]:
    """The variables that tell a runner where the store is (``from_environ`` reads them), and
    the token its uploads show when it has no directory. Pure."""
    env = {FILES_URL_ENV: public_url.rstrip("/"), FILES_TTL_ENV: "" if ttl is None else f"{ttl:g}"}
    if directory is not None:
        env[FILES_DIR_ENV] = str(directory)
    if upload_token is not None:
        env[FILES_TOKEN_ENV] = upload_token
    return env


def cluster_env(public_url: str, ttl: float | None, sha256: str) -> tuple[tuple[str, str], ...]:
    """What a runner on a cluster (no shared disk) is told: the router's URL to upload to, the
    lifetime, and the digest its payload token was made for. Pure."""
    env = location_env(None, public_url, ttl) | {PAYLOAD_SHA256_ENV: sha256}
    return tuple(sorted(env.items()))


def upload_credentials(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers that prove a runner's upload (its payload token, or a local runner's upload
    token), when it has them."""
    env = os.environ if environ is None else environ
    token, sha256 = env.get(PAYLOAD_TOKEN_ENV), env.get(PAYLOAD_SHA256_ENV)
    if token and sha256:
        return {"Authorization": f"Bearer {token}", PAYLOAD_HEADER: sha256}
    if upload_token := env.get(FILES_TOKEN_ENV):
        return {"Authorization": f"Bearer {upload_token}"}
    return {}


def from_environ(environ: Mapping[str, str] | None = None) -> StoreLocation | None:
    """The store this process was given (``location_env``), or None when it was given none."""
    env = os.environ if environ is None else environ
    public_url = env.get(FILES_URL_ENV, "")
    if not public_url:
        return None
    directory = env.get(FILES_DIR_ENV) or None
    ttl_text = env.get(FILES_TTL_ENV, "")
    try:
        ttl = float(ttl_text) if ttl_text else None
    except ValueError:
        ttl = None
    return StoreLocation(Path(directory) if directory else None, public_url.rstrip("/"), ttl)
