"""The machine catalog: which NVML model names and memory sizes each machine type takes."""

from __future__ import annotations

import re

import pytest

from yurt.errors import AppDefinitionError
from yurt.machines import CATALOG, known_machine_types, machine_types_of_gpu, with_overrides

# Every NVML name nomad-device-nvidia reports as ${device.model} for these cards, with the memory
# NVML gives (MiB) and the one machine type it must belong to.
MODELS = [
    ("NVIDIA A100-SXM4-80GB", 81920, "GPU-A100"),
    ("NVIDIA A100 80GB PCIe", 81920, "GPU-A100"),
    ("NVIDIA A100-SXM4-40GB", 40960, "GPU-A100"),
    ("NVIDIA H100 80GB HBM3", 81559, "GPU-H100"),
    ("NVIDIA H100 PCIe", 81559, "GPU-H100"),
    ("NVIDIA H100 NVL", 95830, "GPU-H100"),
    ("NVIDIA H200", 143771, "GPU-H200"),
    ("NVIDIA H200 NVL", 143771, "GPU-H200"),
    ("NVIDIA B200", 183359, "GPU-B200"),
]


def test_catalog_names() -> None:
    """The five machine types users may name, CPU without a GPU pattern."""
    assert known_machine_types() == ["CPU", "GPU-A100", "GPU-B200", "GPU-H100", "GPU-H200"]
    assert not CATALOG["CPU"].gpu and CATALOG["CPU"].gpu_model_pattern is None
    assert all(CATALOG[t].gpu and CATALOG[t].gpu_model_pattern for t in known_machine_types()[1:])


@pytest.mark.parametrize(("name", "memory", "machine_type"), MODELS)
def test_each_model_belongs_to_exactly_its_type(name: str, memory: int, machine_type: str) -> None:
    """Each NVML model string matches its own type and no other (H100 is not H200, and back)."""
    assert machine_types_of_gpu(name, memory) == [machine_type]


def test_h100_80gb_is_under_80_gib_and_still_an_h100() -> None:
    """An H100 80GB reports 81559 MiB (< 80 GiB); its memory class must still admit it."""
    assert 81559 < 80 * 1024
    assert CATALOG["GPU-H100"].matches_gpu("NVIDIA H100 80GB HBM3", 81559)


@pytest.mark.parametrize(
    ("name", "memory"),
    [
        ("NVIDIA H100 80GB HBM3", 40960),  # too little memory for its class
        ("NVIDIA GH200 480GB", 97871),  # Grace Hopper: not an H200 despite the letters
        ("NVIDIA A10", 23028),
        ("NVIDIA L40S", 46068),
        ("Tesla V100-SXM2-16GB", 16160),
    ],
)
def test_other_gpus_belong_to_no_type(name: str, memory: int) -> None:
    """GPUs outside the catalog, or too small for their class, serve no machine type."""
    assert machine_types_of_gpu(name, memory) == []


def test_cpu_matches_no_gpu() -> None:
    """The CPU type never claims a GPU."""
    assert not CATALOG["CPU"].matches_gpu("NVIDIA H100 80GB HBM3", 81559)


def test_patterns_mean_the_same_to_python_and_go() -> None:
    """Patterns are letters, digits and \\b only: Nomad's RE2 reads them as Python's re does."""
    for machine in CATALOG.values():
        if machine.gpu_model_pattern is not None:
            assert re.fullmatch(r"(\\b)?[A-Za-z0-9]+(\\b)?", machine.gpu_model_pattern)


def test_job_builder_fields_are_kept() -> None:
    """gpu, gpu_model_pattern, cpu_mhz and memory_mb stay, with positive resources."""
    for machine in CATALOG.values():
        assert machine.cpu_mhz > 0 and machine.memory_mb > 0
        assert isinstance(machine.gpu, bool)


def test_overrides_replace_fields_and_add_types() -> None:
    """with_overrides changes named fields, adds new types, and leaves CATALOG alone."""
    catalog = with_overrides(
        {
            "GPU-H100": {"cpu_mhz": 8000},
            "GPU-L40S": {"gpu": True, "gpu_model_pattern": r"\bL40S\b", "gpu_memory_mib": 45000},
        }
    )
    assert catalog["GPU-H100"].cpu_mhz == 8000
    assert catalog["GPU-H100"].gpu_model_pattern == CATALOG["GPU-H100"].gpu_model_pattern
    assert CATALOG["GPU-H100"].cpu_mhz == 1000
    assert machine_types_of_gpu("NVIDIA L40S", 46068, catalog) == ["GPU-L40S"]
    with pytest.raises(ValueError, match="gpu"):
        with_overrides({"GPU-X": {"gpu_model_pattern": "X"}})  # a new type must say gpu


def test_unknown_machine_type_is_an_app_error() -> None:
    """The catalog is what an App's machine_type is checked against, at class creation."""
    import yurt

    with pytest.raises(AppDefinitionError, match="GPU-K80"):

        class Odd(yurt.App):
            machine_type = "GPU-K80"

            @yurt.endpoint("/")
            def run(self) -> dict[str, str]:
                return {}
