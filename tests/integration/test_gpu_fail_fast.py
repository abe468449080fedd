"""GPU apps end to end: ``yurt run`` fails fast without the GPU, runners check and map their GPUs.

Where a test needs GPUs it puts a fake ``pynvml`` module first on PYTHONPATH: the runner and the
local backend import NVML by that name, lazily, so nothing in yurt knows it is a fake.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from yurt.backends.localproc import bound_socket, free_port
from yurt.loader import load_app
from yurt.packaging import write_payload
from yurt.runner.gpus import list_gpus, load_nvml

from support import runner_logs, sample_key, samples

pytestmark = pytest.mark.timeout(120)

# A GPU app that fails fast must fail in seconds; generous for a loaded 2-core machine.
FAIL_FAST_S = 30.0
DEADLINE_S = 60.0

GPU_APP = textwrap.dedent("""
    import os
    import yurt

    class GpuApp(yurt.App):
        app_name = "gpu-app"
        machine_type = "GPU-H100"
        num_gpus = 1
        keep_alive = 60

        @yurt.endpoint("/")
        def run(self) -> dict:
            return {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES", "unset")}
""")

FAKE_PYNVML = '''
"""A stand-in for nvidia-ml-py with fixed GPUs (UUIDs GPU-fake-<index>)."""
from types import SimpleNamespace

DEVICES = {devices!r}
USED_MIB = 1024


class NVMLError(Exception):
    pass


def nvmlInit():
    pass


def nvmlShutdown():
    pass


def nvmlDeviceGetCount():
    return len(DEVICES)


def nvmlDeviceGetHandleByIndex(index):
    return index


def nvmlDeviceGetName(handle):
    return DEVICES[handle][0]


def nvmlDeviceGetUUID(handle):
    return "GPU-fake-%d" % handle


def nvmlDeviceGetMemoryInfo(handle):
    total = DEVICES[handle][1] * 1024 * 1024
    return SimpleNamespace(total=total, used=USED_MIB * 1024 * 1024, free=total)


def nvmlDeviceGetUtilizationRates(handle):
    return SimpleNamespace(gpu=37, memory=5)
'''

A100 = ("NVIDIA A100-SXM4-80GB", 81920)
H100 = ("NVIDIA H100 80GB HBM3", 81559)


def app_file(tmp_path: Path) -> Path:
    path = tmp_path / "gpu_app.py"
    path.write_text(GPU_APP)
    return path


def env_with_fake_nvml(tmp_path: Path, devices: list[tuple[str, int]]) -> dict[str, str]:
    """The environment of a child that sees ``devices`` through NVML and no GPU variables."""
    folder = tmp_path / "fake-nvml"
    folder.mkdir(exist_ok=True)
    (folder / "pynvml.py").write_text(FAKE_PYNVML.format(devices=devices))
    env = {k: v for k, v in os.environ.items() if not k.endswith("VISIBLE_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def yurt_run(app: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "yurt.cli", "run", f"{app}::GpuApp", "--port", "0",
            "--data-dir", str(data_dir), "--log-format", "json"]  # fmt: skip


def real_gpus() -> bool:
    return bool(list_gpus(load_nvml()).gpus)


@pytest.mark.skipif(real_gpus(), reason="this machine has GPUs: 'no GPU found' cannot happen")
def test_yurt_run_gpu_app_without_gpu_exits_within_seconds(tmp_path: Path) -> None:
    """`yurt run` of a GPU-H100 app on a machine without GPUs: exit 1 at once, 'no GPU found'."""
    t0 = time.monotonic()
    out = subprocess.run(
        yurt_run(app_file(tmp_path), tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    elapsed = time.monotonic() - t0
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("yurt run: app default/gpu-app: machine_type ['GPU-H100']")
    assert "no GPU found" in last
    assert elapsed < FAIL_FAST_S
    assert not runner_logs(tmp_path / "data" / "logs"), "a runner was started"


def test_yurt_run_gpu_app_on_another_gpu_names_what_was_found(tmp_path: Path) -> None:
    """Only an A100 on the machine: `yurt run` of a GPU-H100 app says it found an A100."""
    out = subprocess.run(
        yurt_run(app_file(tmp_path), tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=env_with_fake_nvml(tmp_path, [A100]),
    )
    assert out.returncode == 1, out.stderr
    assert "asked for 1 GPU-H100, found 1: NVIDIA A100-SXM4-80GB" in out.stderr


def test_yurt_run_gives_the_runner_its_gpu(tmp_path: Path) -> None:
    """With an H100 beside an A100, `yurt run` serves the app on the H100, by UUID."""
    with subprocess.Popen(
        yurt_run(app_file(tmp_path), tmp_path / "data"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env_with_fake_nvml(tmp_path, [A100, H100]),
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"at (http://\S+)", line)
            assert match, f"yurt run printed {line!r}"
            assert post_json(match.group(1)) == {"cuda": "GPU-fake-1"}
            # The router shows which GPUs each runner holds.
            apps_url = match.group(1).rsplit("/default/", 1)[0] + "/_yurt/apps"
            deadline = time.monotonic() + DEADLINE_S
            while True:
                (app,) = get_json(apps_url)  # type: ignore[misc]
                gpus = [g for r in app["runners"] for g in r["gpus"]]
                if gpus or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # polling a condition, not waiting a fixed time
            assert gpus == ["NVIDIA H100 80GB HBM3 GPU-fake-1"]
        finally:
            stop_gently(proc)
    assert proc.returncode == 0


# -- the runner on its own ----------------------------------------------------------------------


def runner_cmd(tmp_path: Path, port: int) -> list[str]:
    cls = load_app(f"{app_file(tmp_path)}::GpuApp")
    _, payload = write_payload(cls, tmp_path / "payloads")
    return [sys.executable, "-m", "yurt.runner", "--payload", str(payload), "--port", str(port)]


def test_runner_with_the_wrong_gpu_exits_with_the_gpu_failure_line(tmp_path: Path) -> None:
    """A runner that sees an A100 for a GPU-H100 app exits 6; its last line says why."""
    out = subprocess.run(
        runner_cmd(tmp_path, free_port("127.0.0.1")),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=env_with_fake_nvml(tmp_path, [A100]),
    )
    assert out.returncode == 6
    assert out.stderr.strip().splitlines()[-1] == (
        "yurt-runner-failure: gpu: asked for 1 GPU-H100, found 1: NVIDIA A100-SXM4-80GB (81920 MiB)"
    )


def test_runner_without_nvml_exits_with_no_gpu_found(tmp_path: Path) -> None:
    """A GPU app's runner where pynvml cannot be imported: 'no GPU found', exit 6."""
    env = env_with_fake_nvml(tmp_path, [])
    (tmp_path / "fake-nvml" / "pynvml.py").write_text("raise ImportError('no NVML here')\n")
    out = subprocess.run(
        runner_cmd(tmp_path, free_port("127.0.0.1")),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=env,
    )
    assert out.returncode == 6
    assert out.stderr.strip().splitlines()[-1] == (
        "yurt-runner-failure: gpu: asked for 1 GPU-H100, no GPU found "
        "(nvidia-ml-py is not installed)"
    )


def stop_gently(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within the deadline."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running(
    cmd: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=pass_fds
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=DEADLINE_S) as resp:
        return json.loads(resp.read())


def post_json(url: str) -> object:
    req = urllib.request.Request(url, data=b"{}", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=DEADLINE_S) as resp:
        return json.loads(resp.read())


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"runner exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(base + "/_yurt/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:  # refused, an HTTP error, or a check slow to answer on a loaded machine
            pass
        time.sleep(0.05)  # polling a condition, not waiting a fixed time
    pytest.fail("runner not ready in time")


def test_runner_maps_nomad_gpus_for_cuda_and_reports_them(tmp_path: Path) -> None:
    """NVIDIA_VISIBLE_DEVICES (Nomad's UUIDs) becomes CUDA_VISIBLE_DEVICES; info and metrics
    report that GPU alone."""
    sock = bound_socket("127.0.0.1")  # inherited, not chosen then freed: tests run in parallel
    port = sock.getsockname()[1]
    env = env_with_fake_nvml(tmp_path, [A100, H100])
    env["NVIDIA_VISIBLE_DEVICES"] = "GPU-fake-1"
    base = f"http://127.0.0.1:{port}"
    cmd = [*runner_cmd(tmp_path, port), "--fd", str(sock.fileno())]
    with sock, running(cmd, env, (sock.fileno(),)) as proc:
        wait_ready(base, proc)
        assert post_json(base + "/") == {"cuda": "GPU-fake-1"}
        info = get_json(base + "/_yurt/info")
        assert isinstance(info, dict)
        assert [(g["uuid"], g["name"], g["memory_total_mib"]) for g in info["gpus"]] == [
            ("GPU-fake-1", "NVIDIA H100 80GB HBM3", 81559)
        ]
        with urllib.request.urlopen(base + "/_yurt/metrics", timeout=DEADLINE_S) as resp:
            found = samples(resp.read().decode())
        gpu = {"index": "1", "uuid": "GPU-fake-1", "name": "NVIDIA H100 80GB HBM3"}
        assert found[sample_key("yurt_gpu_memory_total_bytes", gpu)] == 81559 * 1024 * 1024
        assert found[sample_key("yurt_gpu_memory_used_bytes", gpu)] == 1024 * 1024 * 1024
        assert found[sample_key("yurt_gpu_utilization_ratio", gpu)] == 0.37
        # Only the runner's own GPU: the A100 beside it is not reported.
        assert [k for k in found if k[0] == "yurt_gpu_memory_total_bytes"] == [
            sample_key("yurt_gpu_memory_total_bytes", gpu)
        ]


def test_runner_applies_the_servers_machine_catalog(tmp_path: Path) -> None:
    """With --machines raising the H100's memory floor, the runner refuses an 80 GB H100."""
    cmd = runner_cmd(tmp_path, free_port("127.0.0.1"))
    cmd += ["--machines", json.dumps({"GPU-H100": {"gpu_memory_mib": 90000}})]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=env_with_fake_nvml(tmp_path, [H100]),
    )
    assert out.returncode == 6
    assert out.stderr.strip().splitlines()[-1] == (
        "yurt-runner-failure: gpu: asked for 1 GPU-H100, found 1: NVIDIA H100 80GB HBM3 (81559 MiB)"
    )


def test_yurt_run_reads_the_machine_catalog_from_its_config(tmp_path: Path) -> None:
    """[machines.GPU-H100] in --config applies to the local backend: the H100 no longer fits."""
    config = tmp_path / "yurt.toml"
    config.write_text("[machines.GPU-H100]\ngpu_memory_mib = 90000\n")
    started = time.monotonic()
    out = subprocess.run(
        [*yurt_run(app_file(tmp_path), tmp_path / "data"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=env_with_fake_nvml(tmp_path, [H100]),
    )
    assert out.returncode == 1 and time.monotonic() - started < FAIL_FAST_S
    assert "asked for 1 GPU-H100, found 1: NVIDIA H100 80GB HBM3" in out.stderr


def test_a_gpu_redeploy_frees_the_old_runners_gpu_first(tmp_path: Path) -> None:
    """One H100: a redeploy cannot run both revisions at once, so the old runner gives its GPU
    up for the new one (rather than the new one waiting for a GPU for ever)."""
    env = env_with_fake_nvml(tmp_path, [H100])
    first, second = tmp_path / "v1.py", tmp_path / "v2.py"
    first.write_text(GPU_APP)
    second.write_text(GPU_APP.replace('{"cuda":', '{"v2": True, "cuda":'))
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "yurt.cli", "server", "--port", "0",
           "--data-dir", str(tmp_path / "data")]  # fmt: skip
    with log.open("wb") as out, subprocess.Popen(cmd, stdout=out, stderr=out, env=env) as proc:
        try:
            deadline = time.monotonic() + DEADLINE_S
            while not (found := re.search(r"server at (http://\S+)", log.read_text())):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)  # polling a condition, not waiting a fixed time
            base = found.group(1)

            def deploy(app: Path) -> None:
                args = ["deploy", f"{app}::GpuApp", "--server", base]
                done = subprocess.run(
                    [sys.executable, "-m", "yurt.cli", *args],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=DEADLINE_S,
                )
                assert done.returncode == 0, done.stderr

            deploy(first)
            assert post_json(f"{base}/default/gpu-app") == {"cuda": "GPU-fake-0"}
            deploy(second)
            while (answer := post_json(f"{base}/default/gpu-app")) != {
                "v2": True,
                "cuda": "GPU-fake-0",
            }:
                assert answer == {"cuda": "GPU-fake-0"}  # the old revision, until replaced
                assert time.monotonic() < deadline + DEADLINE_S, "the new revision never served"
        finally:
            stop_gently(proc)
    assert proc.returncode == 0, log.read_text()
