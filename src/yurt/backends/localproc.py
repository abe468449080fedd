"""How the local backend starts a runner process: its socket, command line and environment.
No state: ``LocalBackend`` holds the runners."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from yurt.appdata import APP_DATA_ENV, app_data_env
from yurt.config import CONFIG_ENV, LocalBackendConfig
from yurt.runner.contract import RUNNER_MODULE, runner_argv

LISTEN_BACKLOG = 1024  # the runner's own (runner/server.py)


def bound_socket(host: str) -> socket.socket:
    """A TCP socket bound to a free port of ``host``, for a runner to listen on.

    Bound here and inherited by the runner, so that nothing can take the port between the
    choice and the runner's listen.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        # Listening already: a health check sent before the runner serves waits in the
        # backlog for its answer instead of being refused and tried again a poll later.
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def free_port(host: str) -> int:
    """A port the OS reports free now (whoever binds it next may lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def runner_command(
    config: LocalBackendConfig,
    payload: Path,
    runner_id: str,
    port: int,
    fd: int,
    machines: Mapping[str, Mapping[str, Any]],
    *,
    parent_pid: int | None = None,
    python: str | None = None,
) -> list[str]:
    """The runner's command line: ``python -m yurt.runner`` listening on the inherited ``fd``
    (bound to ``port``), draining when this process (``parent_pid``) is gone; ``python`` is
    the app's environment's interpreter (``config.python`` without one)."""
    argv = runner_argv(
        payload=str(payload),
        host=config.host,
        port=port,
        fd=fd,
        runner_id=runner_id,
        parent_pid=os.getpid() if parent_pid is None else parent_pid,
        kill_after=config.kill_after,
        loop=config.runner_loop,
        machines=machines,
    )
    return [python or config.python, "-m", RUNNER_MODULE, *argv]


# What a runner takes from the environment yurt runs in (``runner_env``). An allow-list: the
# control plane's environment holds its own credentials (YURT_ADMIN_TOKEN, NOMAD_TOKEN,
# CONSUL_HTTP_TOKEN, cloud keys) and user code runs in the runner.
RUNNER_ENV_NAMES = frozenset(
    (
        # who and where: the shell's basics
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        # outbound traffic through a proxy, in both spellings tools read, and its CA
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        # the runner imports what this process imports, native libraries included
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
    )
)
# Locale categories, the GPU stack's settings, and yurt's variables meant for runners.
RUNNER_ENV_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "YURT_")
# yurt's own configuration (``CONFIG_ENV``) never passes, even under the YURT_ prefix; nor
# does a YURT_ variable named like a credential, whoever reads it.
_CREDENTIAL_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


def runner_env(
    environ: Mapping[str, str],
    gpu_uuids: Sequence[str],
    pass_env: Collection[str] = (),
    app_data: Path | None = None,
) -> dict[str, str]:
    """The runner's environment: what an app needs of ``environ``, unbuffered, seeing only its
    own GPUs, with its app's data directory (``app_data_env``) when it has one. Pure.

    Kept: ``RUNNER_ENV_NAMES``, names starting with ``RUNNER_ENV_PREFIXES`` and the names in
    ``pass_env`` (``[local] pass_env``). Dropped: everything else (NOMAD_*, CONSUL_*, VAULT_*,
    AWS_*, ...), every variable yurt's configuration reads (``CONFIG_ENV``) and YURT_ names that
    look like credentials.

    UUIDs, not indexes: CUDA numbers GPUs fastest first unless told otherwise, NVML by PCI bus.
    An empty value hides every GPU from a CPU runner, so none uses another's GPU.
    """
    env = {
        name: value
        for name, value in environ.items()
        if name not in CONFIG_ENV and (name in pass_env or _for_runner(name))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_uuids)
    if app_data is not None:
        # A cache the operator passed on purpose (``pass_env``: one shared HF cache on a big
        # disk, say) is kept; the rest point into the app's own directory.
        data = app_data_env(str(app_data))
        env |= {k: v for k, v in data.items() if k == APP_DATA_ENV or k not in env}
    return env


def _for_runner(name: str) -> bool:
    if name in RUNNER_ENV_NAMES:
        return True
    if not name.startswith(RUNNER_ENV_PREFIXES):
        return False
    return not (name.startswith("YURT_") and _CREDENTIAL_NAME.search(name))
