"""The server's secrets on Nomad: one Variable per secret, copied into each job's Variable.

``yurt secrets set NAME`` against a server on Nomad writes the Variable ``<secrets_path>/NAME``
(``[nomad] secrets_path``, ``yurt/secrets`` by default) with the one item ``value``; ``list``
reads the Variables' metadata only (``GET /v1/vars?prefix=``: paths and times, never items).
Runners cannot read those paths without an ACL policy written for them, so the server copies
every secret into each job's own Variable (``appenv.job_variable``), which the job's tasks read
with no policy at all; every change of a secret rewrites the job Variables (``on_change``), so
that runners started after it get it, as on the local backend. The server's Nomad token needs
``variables`` write, read, list and destroy on both paths.

Nomad keeps Variables encrypted at rest with its keyring; a value travels only in the bodies of
``/v1/var`` calls, never in a job, a log line or an error message here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from yurt.backends.nomad.appenv import job_variable, variable_items
from yurt.backends.nomad.client import NomadClient
from yurt.backends.nomad.naming import base_job
from yurt.errors import ConfigError
from yurt.secret_rules import SecretInfo, name_problem, value_problem

# A Variable holds at most 64 KiB of keys and values (nomad/structs/variables.go:53, 378 at
# hashicorp/nomad aa026cc9); each job's Variable holds every secret and the payload token.
MAX_VARIABLE = 65536
TOKEN_ROOM = 512  # the payload token's item, with room to spare
ITEM = "value"


class SecretsTooLarge(ValueError):
    """The secrets would no longer fit one job Variable."""


class NomadSecrets:
    """The server's secrets as Nomad Variables (a ``SecretKeeper``)."""

    def __init__(
        self,
        client: NomadClient,
        prefix: str,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix.strip("/")
        self.on_change = on_change

    def _path(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    async def set_secret(self, name: str, value: str, now: float) -> bool:
        """Set (or replace) a secret; True when it is new. ``now`` is unused: Nomad's
        ModifyTime says when. Raises ``ConfigError`` for a bad name or value,
        ``SecretsTooLarge`` when every secret together would not fit a job's Variable."""
        problem = name_problem(name) or value_problem(value)
        if problem is not None:
            raise ConfigError(problem)
        found = await self.values()
        found[name] = value
        size = sum(len(k.encode()) + len(v.encode()) for k, v in found.items())
        if size + TOKEN_ROOM > MAX_VARIABLE:
            raise SecretsTooLarge(
                f"the secrets would take {size} bytes together, and Nomad gives each job's "
                f"Variable (which holds every secret) {MAX_VARIABLE - TOKEN_ROOM}; unset some"
            )
        new = await self.client.get_variable(self._path(name)) is None
        await self.client.put_variable(self._path(name), {ITEM: value})
        await self._changed()
        return new

    async def unset_secret(self, name: str) -> bool:
        """Remove a secret; False when there was none of that name."""
        if name_problem(name) is not None:
            return False  # no Variable can have been written under it
        if await self.client.get_variable(self._path(name)) is None:
            return False
        await self.client.delete_variable(self._path(name))
        await self._changed()
        return True

    async def list_secrets(self) -> list[SecretInfo]:
        """Every secret's name and when it was set, by name (metadata only)."""
        found = []
        for meta in await self.client.list_variables(self.prefix + "/"):
            name = str(meta.get("Path", "")).removeprefix(self.prefix + "/")
            if name_problem(name) is None:  # a Variable someone else wrote deeper down
                found.append(SecretInfo(name, int(meta.get("ModifyTime") or 0) / 1e9))
        return sorted(found, key=lambda s: s.name)

    async def values(self) -> dict[str, str]:
        """Every secret's value by name, for the job Variables."""
        names = [s.name for s in await self.list_secrets()]
        read = await asyncio.gather(*(self.client.get_variable(self._path(n)) for n in names))
        out = {}
        for name, variable in zip(names, read, strict=True):
            items = (variable or {}).get("Items") or {}
            if isinstance(items.get(ITEM), str):
                out[name] = items[ITEM]
        return out

    async def _changed(self) -> None:
        if self.on_change is not None:
            await self.on_change()


class JobVariables:
    """Each job's Variable (``appenv.job_variable``): its payload token and every secret.

    Written before the job is registered (``nomadVar`` holds the task until it exists), again
    whenever a secret changes (``refresh``), and deleted with the job (``drop``).
    """

    def __init__(
        self,
        client: NomadClient,
        secrets: NomadSecrets,
        runner_token: Callable[[str], str] | None = None,
    ) -> None:
        self.client = client
        self.secrets = secrets
        # The runners' token of a job, from its app's job id (``naming.base_job``).
        self.runner_token = runner_token
        self._tokens: dict[str, str] = {}  # job id -> its revision's payload token
        self._lock = asyncio.Lock()  # one rewrite at a time: the last secrets win

    async def write(self, job_id: str, token: str) -> None:
        """Write the job's Variable with ``token`` and the secrets as they are now."""
        async with self._lock:
            self._tokens[job_id] = token
            await self._put(job_id, token, await self.secrets.values())

    async def refresh(self) -> None:
        """Rewrite every job's Variable with the secrets as they are now."""
        async with self._lock:
            found = await self.secrets.values()
            for job_id, token in list(self._tokens.items()):
                await self._put(job_id, token, found)

    async def drop(self, job_id: str) -> None:
        """Delete the job's Variable (the job is gone, or going)."""
        async with self._lock:
            self._tokens.pop(job_id, None)
            await self.client.delete_variable(job_variable(job_id))

    async def _put(self, job_id: str, token: str, secrets: dict[str, str]) -> None:
        shown = self.runner_token(base_job(job_id)) if self.runner_token is not None else ""
        items = variable_items(token, secrets, shown)
        await self.client.put_variable(job_variable(job_id), items)
