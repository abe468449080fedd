"""A torch App for ``bench/gpu_check.sh``: one square matmul per request on the runner's GPU.

``TorchMatmul`` imports torch in ``setup()`` only, so that loading this module (the router, the
payload) never needs torch. ``CpuMatmul`` is the same App on a CPU machine type with a pure
Python kernel, for checking the benchmark's plumbing where there is no GPU (``--dry-run``).

``Kernel`` is what one request does; the benchmark calls the same class in its own process as
the direct baseline.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import yurt

SIZE = 1024
CPU_SIZE = 24  # the pure Python kernel: ~14k multiply-adds, a few ms


class Kernel:
    """One ``SIZE``x``SIZE`` bf16 matmul on the first visible GPU, or a small one in Python."""

    def __init__(self, kind: str, size: int = SIZE) -> None:
        self.kind = kind
        self.size = size
        if kind == "torch":
            import torch  # here, not at the top: a router or a CPU machine never needs it

            torch.backends.cuda.matmul.allow_tf32 = True
            self.torch: Any = torch
            self.device = torch.device("cuda", 0)
            gen = torch.Generator(device=self.device).manual_seed(0)
            shape = (size, size)
            self.a = torch.randn(shape, device=self.device, dtype=torch.bfloat16, generator=gen)
            self.b = torch.randn(shape, device=self.device, dtype=torch.bfloat16, generator=gen)
            self.device_name = str(torch.cuda.get_device_name(self.device))
        else:
            rng = random.Random(0)
            self.pa = [[rng.random() for _ in range(size)] for _ in range(size)]
            self.pb = [[rng.random() for _ in range(size)] for _ in range(size)]
            self.device_name = "cpu (pure Python)"

    def __call__(self) -> float:
        """Multiply; the returned element makes the host wait for the GPU to finish."""
        if self.kind == "torch":
            with self.torch.no_grad():
                return float((self.a @ self.b)[0, 0].item())
        cols = list(zip(*self.pb, strict=True))
        return sum(sum(x * y for x, y in zip(r, c, strict=True)) for r in self.pa for c in cols)


class TorchMatmul(yurt.App):
    """A 1024x1024 bf16 matmul per request on one GPU of any type in the catalog."""

    app_name = "torch-matmul"
    machine_type = ["GPU-H100", "GPU-H200", "GPU-B200", "GPU-A100"]
    num_gpus = 1
    max_multiplexing = 8
    min_concurrency = 0
    max_concurrency = 1
    keep_alive = 600
    startup_timeout = 240
    kernel_kind = "torch"

    def setup(self) -> None:
        t0 = time.perf_counter()
        self.kernel = Kernel(self.kernel_kind, SIZE if self.kernel_kind == "torch" else CPU_SIZE)
        self.kernel()  # the first call pays for the cuBLAS handle and kernel selection
        self.setup_s = time.perf_counter() - t0

    @yurt.endpoint("/")
    def matmul(self) -> dict[str, float]:
        return {"c00": self.kernel()}

    @yurt.endpoint("/info")
    def info(self) -> dict[str, Any]:
        return {
            "setup_s": round(self.setup_s, 3),
            "device": self.kernel.device_name,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pid": os.getpid(),
        }


class CpuMatmul(TorchMatmul):
    """The same App on a CPU machine type with a pure Python kernel (no torch, no GPU)."""

    app_name = "cpu-matmul"
    machine_type = "CPU"
    num_gpus = 0
    kernel_kind = "python"
