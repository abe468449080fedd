"""Files and directories only their owner can read: what the data dir holds.

The data dir keeps callers' request bodies and results, runner logs, payloads (user code) and
the server's keys. Each is made private when it is made, whatever the process's umask: a mode
given to ``os.open``/``mkdir`` is only ever narrowed by the umask, never widened, so ``0o600``
and ``0o700`` come out as asked. Files made before yurt did this are narrowed when the data
dir is opened (``tighten``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from yurt.errors import ConfigError

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
OTHERS = 0o077  # group and world bits: none may be set under the data dir


def private_dir(path: Path) -> Path:
    """Make ``path`` and any missing parents ``0700``; narrow it if it exists wider.

    Raises ``ConfigError`` for a directory everyone may write to (sticky or world-writable).

    Parents are made one by one: ``Path.mkdir(parents=True, mode=...)`` gives the mode to the
    last one only (as ``mkdir -p`` does).
    """
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    mode = path.stat().st_mode
    if mode & (stat.S_ISVTX | stat.S_IWOTH):
        # /tmp and the like: narrowing one would lock every other user out of it.
        raise ConfigError(
            f"{path} is a directory everyone shares (mode {stat.S_IMODE(mode):o}); give yurt "
            "a directory of its own, e.g. a new one inside it"
        )
    _narrow(path)
    return path


def create_private(path: Path) -> None:
    """Make ``path`` an empty ``0600`` file if it does not exist; narrow it if it does."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    _narrow(path)


def open_private(path: Path, mode: str = "ab") -> IO[Any]:
    """``open(path, mode)`` for ``a``/``a+``/``ab`` modes, creating the file ``0600``."""
    flags = os.O_CREAT | os.O_APPEND | (os.O_RDWR if "+" in mode else os.O_WRONLY)
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        now = stat.S_IMODE(os.fstat(fd).st_mode)
        if now & OTHERS:
            os.fchmod(fd, now & ~OTHERS)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def tighten(root: Path) -> None:
    """Take the group's and others' bits off ``root`` and everything under it.

    Symbolic links are left alone (their own mode means nothing, and ``os.walk`` does not
    follow them).
    """
    _narrow(root)
    for top, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            _narrow(Path(top, name))


def _narrow(path: Path) -> None:
    st = path.lstat()
    if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & OTHERS:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~OTHERS)


PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def hide_process() -> bool:
    """Make this process's memory and environment unreadable to processes of the same user.

    A runner runs as the server's user, and Linux lets a process read another of its user's
    ``/proc/PID/environ`` (where ``YURT_ADMIN_TOKEN``, ``NOMAD_TOKEN`` and the like sit) and
    memory. Once the server is not "dumpable" (``prctl(2)``), those files belong to root; a
    runner, being a new program (``execve``), is dumpable again, so this holds for the server
    alone. The cost: no core dump of the server, and a debugger or profiler attaching to it
    needs root. Returns whether it took effect (Linux only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file of its own (two writers may race).

    The file is ``0600`` (``mkstemp`` makes it so) in directories made ``0700``.
    """
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_secret(path: Path) -> bytes:
    """A random key kept in ``path`` (made on first use, readable by the owner only).

    Written whole before it gets its name (a crash never leaves an empty key behind: an empty
    HMAC key would make every token computable from public digests); an empty file is refused.
    The data dir's lock keeps two servers from making one at the same time.
    """
    if not path.exists():
        private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:  # mkstemp makes it 0600
                f.write(secrets.token_hex(32))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    secret = path.read_text().strip()
    if not secret:
        raise ConfigError(f"the key file {path} is empty; delete it and start again")
    return secret.encode()
