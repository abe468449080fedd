"""The benchmarks' served platform (bench/_serve.py) starts from the environment as `yurt run`
does: its GPUs from $CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH_SERVE = Path(__file__).resolve().parents[2] / "bench" / "_serve.py"


def load_serve() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_serve", BENCH_SERVE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_served_platform_hands_out_the_gpus_cuda_visible_devices_names(
    tmp_path: Path,
) -> None:
    """$CUDA_VISIBLE_DEVICES set: only those GPUs (empty: none); unset: every GPU NVML sees."""
    serve = load_serve()
    given = serve.server_config(tmp_path, "asyncio", {"CUDA_VISIBLE_DEVICES": "1,3"})
    assert given.local.gpus == "1,3" and given.local.runner_loop == "asyncio"
    assert serve.server_config(tmp_path, "auto", {"CUDA_VISIBLE_DEVICES": ""}).local.gpus == ""
    assert serve.server_config(tmp_path, "auto", {}).local.gpus is None
