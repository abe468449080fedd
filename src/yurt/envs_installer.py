"""The install command of one step, for pip or uv, with the machine's pip configuration.

pip reads its configuration itself (``pip.conf`` files, ``PIP_*`` variables): the build runs
with the server's own environment, so it needs nothing more. uv reads none of it, so the
settings that decide where packages come from are translated: ``pip config list`` says what pip
would use, and ``uv_settings`` turns it into uv's flags and variables (pure).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from yurt.errors import EnvironmentBuildError

log = structlog.get_logger("yurt.envs")

# pip's settings that tell it where packages come from, and uv's flag for each (repeated for
# each value of a list). Others (a proxy, retries, ...) pip reads from the same places, uv from
# its own (``UV_*``, uv.toml).
_LISTS = {
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
# uv reads the certificate bundle and client certificate from these (uv's docs, "TLS
# certificates"); pip's timeout is uv's UV_HTTP_TIMEOUT.
_VARIABLES = {
    "cert": "SSL_CERT_FILE",
    "client-cert": "SSL_CLIENT_CERT",
    "timeout": "UV_HTTP_TIMEOUT",
}
_TRUE = {"1", "true", "yes", "on", "y", "t"}


def parse_config_list(text: str) -> dict[str, str]:
    """``pip config list`` output (``section.key='value'`` lines) as a dict. Pure."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or "." not in key:
            continue
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            continue
        if isinstance(parsed, str):
            found[key.strip()] = parsed
    return found


def effective(config: Mapping[str, str], key: str) -> str | None:
    """What ``pip install`` uses for ``key``: its variable (``PIP_KEY``, section ``:env:``) over
    an ``[install]`` setting over a ``[global]`` one, as pip's option parser orders them. Pure."""
    names = [key, *(("default-timeout",) if key == "timeout" else ())]
    for section in (":env:", "install", "global"):
        for name in names:
            if f"{section}.{name}" in config:
                return config[f"{section}.{name}"]
    return None


@dataclass(frozen=True)
class UvSettings:
    """uv's flags and variables for what pip's configuration says."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def uv_settings(config: Mapping[str, str]) -> UvSettings:
    """pip's configuration (``pip config list``) as uv flags and variables. Pure.

    uv takes the best version across every index, as pip does (``--index-strategy
    unsafe-best-match``), so the same requirements resolve alike with either installer.
    """
    args = ["--index-strategy", "unsafe-best-match"]
    env: dict[str, str] = {}
    if index := effective(config, "index-url"):
        args += ["--index-url", index]
    if (effective(config, "no-index") or "").lower() in _TRUE:
        args.append("--no-index")
    for key, flag in _LISTS.items():
        for value in (effective(config, key) or "").split():
            args += [flag, value]
    for key, var in _VARIABLES.items():
        if setting := effective(config, key):
            env[var] = setting
    return UvSettings(args, env)


def read_pip_config(python: str) -> dict[str, str]:
    """What ``python -m pip config list`` says, with this process's environment; empty (and
    logged) when pip cannot say."""
    done = subprocess.run(
        [python, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        log.warning("pip_config_unreadable", exit=done.returncode)  # values may hold passwords
        return {}
    return parse_config_list(done.stdout)


def find_uv(python: str) -> str | None:
    """uv on ``PATH``, else beside yurt's interpreter (``pip install uv`` puts it there)."""
    if found := shutil.which("uv"):
        return found
    for folder in {Path(python).parent, Path(sys.executable).parent}:
        candidate = folder / "uv"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@dataclass(frozen=True)
class Installer:
    """How one environment's steps are installed: ``command`` per step, run with ``env``."""

    name: str
    base: list[str]  # the command without the step's requirements
    env: dict[str, str]  # variables set over the server's own

    def command(self, step: Sequence[str]) -> list[str]:
        return [*self.base, *step]


def make_installer(name: str, python: str, target: Path, extra: Sequence[str]) -> Installer:
    """The installer ``name`` installing into the environment whose interpreter is ``target``,
    run by yurt's interpreter ``python``, ``extra`` (``[envs] pip_args``) appended."""
    if name == "uv":
        uv = find_uv(python)
        if uv is None:
            raise EnvironmentBuildError(
                "[envs] installer = 'uv' but uv is not installed on the server (not on PATH nor "
                "beside yurt's interpreter); install it or use installer = 'pip'"
            )
        told = uv_settings(read_pip_config(python))
        args = told.args
        if "--index-strategy" in extra:  # the operator's choice; uv refuses the flag twice
            args = args[2:]
        base = [uv, "pip", "install", "--python", str(target), *args]
        return Installer("uv", [*base, *extra], told.env)
    # yurt's own pip installs into the environment, which then needs no pip of its own.
    base = [python, "-m", "pip", "--python", str(target), "install", "--progress-bar", "off"]
    return Installer("pip", [*base, *extra], {})
