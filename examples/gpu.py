"""An App on two H100s that reports the GPUs its runner was given.

``yurt run examples/gpu.py::GpuInfo`` works on any machine (it reports what it sees there); on
Nomad each runner gets two whole H100s, and the runner points ``CUDA_VISIBLE_DEVICES`` at them.
Nothing heavy is imported at module level: NVML is loaded in ``setup()``, on the runner.
"""

import os

from pydantic import BaseModel

import yurt


class GpuReport(BaseModel):
    cuda_visible_devices: str | None
    nvidia_visible_devices: str | None
    count: int
    names: list[str]
    error: str | None = None


class GpuInfo(yurt.App):
    app_name = "gpu-info"
    machine_type = "GPU-H100"
    num_gpus = 2
    max_concurrency = 1
    keep_alive = 60

    def setup(self) -> None:
        self.names, self.error = visible_gpu_names()

    @yurt.endpoint("/")
    def report(self) -> GpuReport:
        return GpuReport(
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            nvidia_visible_devices=os.environ.get("NVIDIA_VISIBLE_DEVICES"),
            count=len(self.names),
            names=self.names,
            error=self.error,
        )


def visible_gpu_names() -> tuple[list[str], str | None]:
    """NVML names of the GPUs in CUDA_VISIBLE_DEVICES (all GPUs when it is unset)."""
    try:
        import pynvml  # nvidia-ml-py, a yurt dependency; sees every GPU, not just ours

        pynvml.nvmlInit()
    except Exception as exc:  # no driver on this machine
        return [], f"NVML unavailable: {exc}"
    try:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
        else:
            ids = [v.strip() for v in visible.split(",") if v.strip()]
            handles = [
                pynvml.nvmlDeviceGetHandleByUUID(v)
                if v.startswith(("GPU-", "MIG-"))
                else pynvml.nvmlDeviceGetHandleByIndex(int(v))
                for v in ids
            ]
        names = [pynvml.nvmlDeviceGetName(h) for h in handles]  # bytes in old releases
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names], None
    except Exception as exc:
        return [], f"NVML error: {exc}"
    finally:
        pynvml.nvmlShutdown()
