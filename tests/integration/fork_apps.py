"""Apps for the template tests (test_fork_templates.py): each reports its pid, and where a test
asks ($YURT_TEST_SEEN), the GPUs its runner was given."""

import os
import time
from pathlib import Path

from pydantic import BaseModel

import yurt


class Prompt(BaseModel):
    prompt: str = ""


class Reply(BaseModel):
    text: str


class Forked(yurt.App, keep_alive=1.0, max_concurrency=2):
    """Scales to zero a second after its last request; answers with its pid."""

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=f"pid {os.getpid()}")


class Fresh(Forked, fork_runners=False):
    """The same, each runner a fresh interpreter."""

    app_name = "fresh"


class Kept(yurt.App, keep_alive=300, max_concurrency=2):
    """Keeps its runner five minutes after a request."""

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=f"pid {os.getpid()}")


class Threaded(Forked):
    """Its preload starts a thread at import: its template must not fork."""

    app_name = "threaded"
    preload = ["starts_a_thread"]


class Stubborn(yurt.App, keep_alive=300, termination_grace_period_seconds=0.5):
    """Starts a child process in setup() and never finishes its teardown: it is killed
    kill_after seconds past its grace, its child with it."""

    def setup(self) -> None:
        import subprocess

        child = subprocess.Popen(["sleep", "1000"])
        Path(os.environ["YURT_TEST_CHILD_PID"]).write_text(str(child.pid))

    def teardown(self) -> None:
        time.sleep(600)

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=f"pid {os.getpid()}")


class TwoGpus(yurt.App, keep_alive=300, min_concurrency=2, max_concurrency=2):
    """Two runners of one GPU each; each writes the GPUs it sees in setup()."""

    machine_type = "GPU-H100"
    num_gpus = 1

    def setup(self) -> None:
        seen = Path(os.environ["YURT_TEST_SEEN"]) / str(os.getpid())
        seen.write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))


class Clinging(yurt.App, keep_alive=300):
    """Starts a child process in setup() that ignores SIGTERM (a model server slow to leave),
    noting its pid in the file $YURT_TEST_CHILD_PID."""

    def setup(self) -> None:
        import subprocess

        child = subprocess.Popen(["sh", "-c", "trap '' TERM; exec sleep 1000"])
        Path(os.environ["YURT_TEST_CHILD_PID"]).write_text(str(child.pid))

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=f"pid {os.getpid()}")


class Passing(Forked):
    """Its preload starts a thread that ends once a gate file exists: its template forks only
    after that."""

    app_name = "passing"
    preload = ["waits_for_a_gate"]
