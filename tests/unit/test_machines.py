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
    ("NVIDIA L40", 46068, "GPU-L40"),
    ("NVIDIA L40S", 46068, "GPU-L40"),
    ("NVIDIA RTX A6000", 49140, "GPU-A6000"),
    ("NVIDIA GeForce RTX 4090", 24564, "GPU-RTX4090"),
    ("NVIDIA GeForce RTX 5090", 32607, "GPU-RTX5090"),
    ("Tesla T4", 15360, "GPU-T4"),
]

# Every machine type fal documents (docs.fal.ai "Machine Types", and its older pages).
FAL_CPU = ["XS", "S", "M", "L", "XL"]
FAL_GPU = [
    "GPU-A100",
    "GPU-A6000",
    "GPU-B200",
    "GPU-H100",
    "GPU-H200",
    "GPU-L40",
    "GPU-RTX4090",
    "GPU-RTX5090",
    "GPU-T4",
]


def test_catalog_names() -> None:
    """yurt's CPU type and each of fal's names; CPU sizes without a GPU pattern, GPUs with one."""
    assert known_machine_types() == sorted(["CPU", *FAL_CPU, *FAL_GPU])
    for t in ["CPU", *FAL_CPU]:
        assert not CATALOG[t].gpu and CATALOG[t].gpu_model_pattern is None
    assert all(CATALOG[t].gpu and CATALOG[t].gpu_model_pattern for t in FAL_GPU)


@pytest.mark.parametrize("machine_type", [*FAL_CPU, *FAL_GPU, "GPU"])
def test_every_fal_machine_type_is_accepted(machine_type: str) -> None:
    """An App with any machine_type fal documents is valid here; fal's old "GPU" is an A100."""
    import yurt

    class Fal(yurt.App, machine_type=machine_type):
        @yurt.endpoint("/")
        def run(self) -> None:
            pass

    expected = "GPU-A100" if machine_type == "GPU" else machine_type
    assert yurt.build_spec(Fal).machine_types == [expected]


def test_fal_cpu_sizes_reserve_what_fal_gives() -> None:
    """XS..XL reserve fal's cores (1000 MHz each) and RAM on Nomad."""
    sizes = {t: (CATALOG[t].cpu_mhz, CATALOG[t].memory_mb) for t in FAL_CPU}
    assert sizes == {
        "XS": (500, 512),
        "S": (1000, 1024),
        "M": (2000, 2048),
        "L": (4000, 15360),
        "XL": (8000, 30720),
    }


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
            "GPU-A10": {"gpu": True, "gpu_model_pattern": r"\bA10\b", "gpu_memory_mib": 22000},
        }
    )
    assert catalog["GPU-H100"].cpu_mhz == 8000
    assert catalog["GPU-H100"].gpu_model_pattern == CATALOG["GPU-H100"].gpu_model_pattern
    assert CATALOG["GPU-H100"].cpu_mhz == 1000
    assert machine_types_of_gpu("NVIDIA A10", 23028, catalog) == ["GPU-A10"]
    with pytest.raises(ValueError, match="gpu"):
        with_overrides({"GPU-X": {"gpu_model_pattern": "X"}})  # a new type must say gpu


def test_unknown_machine_type_is_an_app_error() -> None:
    """The catalog is what an App's machine_type is checked against, at class creation."""
    import yurt

    with pytest.raises(AppDefinitionError, match=r"GPU-K80.*\[machines\]"):

        class Odd(yurt.App):
            machine_type = "GPU-K80"

            @yurt.endpoint("/")
            def run(self) -> dict[str, str]:
                return {}
