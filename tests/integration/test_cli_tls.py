"""``yurt run``'s https options as a user meets them: a bad option is one line and exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ECHO = f"{Path(__file__).parents[2] / 'examples' / 'echo.py'}::Echo"


def yurt_run_fails(data_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run ``yurt run`` with ``options``, expecting it to stop on its own."""
    command = [sys.executable, "-m", "yurt.cli", "run", ECHO, "--port", "0",
               "--data-dir", str(data_dir), *options]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_missing_certificate_file(tmp_path: Path) -> None:
    """A certificate file that is not there: exit 1 with one line naming it, no traceback."""
    cert = tmp_path / "missing.pem"
    out = yurt_run_fails(tmp_path, "--tls-cert", str(cert), "--tls-key", str(cert))
    assert out.returncode == 1
    assert out.stderr.startswith(f"yurt run: cannot load the TLS certificate {cert}")
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_not_a_certificate(tmp_path: Path) -> None:
    """A file that is not PEM: exit 1, one line asking for a PEM chain and its key."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    out = yurt_run_fails(tmp_path, "--tls-cert", str(junk), "--tls-key", str(junk))
    assert out.returncode == 1
    assert "give a PEM certificate chain and its private key" in out.stderr
    assert out.stderr.count("\n") == 1


def test_certificate_without_key(tmp_path: Path) -> None:
    """--tls-cert alone: exit 1 at once, naming the missing --tls-key."""
    out = yurt_run_fails(tmp_path, "--tls-cert", str(tmp_path / "c.pem"))
    assert out.returncode == 1
    assert out.stderr == "yurt run: --tls-key is missing: --tls-cert and --tls-key go together\n"
