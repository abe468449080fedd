"""The runner process ends whatever ends its serving, even with a thread stuck in user code."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# A runner whose serving fails with a worker thread still in a setup() that never returns.
SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from concurrent.futures import ThreadPoolExecutor
    import yurt.runner.__main__ as runner

    def serving_that_fails(main, loop):
        main.close()
        stuck = threading.Event()
        ThreadPoolExecutor(1).submit(stuck.wait)  # a setup() that never returns
        raise RuntimeError("serving failed")

    runner.run = serving_that_fails
    runner.main(["--payload", sys.argv[1], "--port", "0"])
    """
)


def test_a_runner_whose_serving_fails_exits_despite_a_stuck_thread(tmp_path: Path) -> None:
    """An exception out of serving still ends the process (code 1), not a join on the thread."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "absent.yurt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "RuntimeError: serving failed" in done.stderr
