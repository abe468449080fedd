"""Tests for ``yurt.backends.nomad.jobspec``: the Nomad job of an app revision.

Golden files in ``nomad_golden/`` pin the whole job of each example. After an intended change,
rewrite them with ``YURT_UPDATE_GOLDEN=1 pytest tests/unit/backends/test_jobspec.py`` and review
the diff. Every job built here is also checked by the shared ``nomad_validate.py`` (skipped when
that checkout is absent) and by the Nomad double's validator.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import yurt
from yurt.backends.nomad.jobspec import (
    CONTAINER_PORT,
    HEALTH_PATH,
    build_job,
    gpu_device,
    ns,
    register_body,
    resources,
    timings,
)
from yurt.backends.nomad.naming import PayloadRef
from yurt.config import NomadConfig
from yurt.errors import AppDefinitionError, ConfigError, DeployError
from yurt.loader import load_app
from yurt.machines import CATALOG, with_overrides
from yurt.spec import AppSpec, build_spec

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "nomad_golden"
SHARED_VALIDATOR = REPO.parent / "shared" / "tools" / "nomad_validate.py"
SERVER_JOB = REPO / "jobs" / "yurt-server.json"

SHA = "3f" * 32
PAYLOAD = PayloadRef(
    url=f"http://yurt.internal:8080/_yurt/payloads/{SHA}",
    sha256=SHA,
    token="tok-fixed-for-golden-files",
    revision=SHA[:12],
)
CONFIG = NomadConfig(
    addr="http://127.0.0.1:4646",
    namespace="default",
    region="global",
    datacenters=("dc1",),
    node_pool="default",
    driver="raw_exec",
    python="/opt/yurt/venv/bin/python",
    image="yurt-runner:0.1.0",
    job_prefix="yurt",
    check_interval=10.0,
    check_timeout=2.0,
    restart_delay=15.0,
)
DOCKER = CONFIG.model_copy(update={"driver": "docker"})
DURATION_KEYS = {
    "Interval",
    "Timeout",
    "Grace",
    "MinHealthyTime",
    "HealthyDeadline",
    "ProgressDeadline",
    "Delay",
    "MaxDelay",
    "KillTimeout",
    "ShutdownDelay",
}

pytestmark = pytest.mark.usefixtures("isolated_imports")


def spec_of(target: str) -> AppSpec:
    """The AppSpec of ``FILE::Class``, relative to the repository root."""
    file, _, cls = target.partition("::")
    return build_spec(load_app(f"{REPO / file}::{cls}"))


def _load_shared() -> Callable[[dict[str, Any]], list[str]] | None:
    if not SHARED_VALIDATOR.is_file():
        return None
    loaded = importlib.util.spec_from_file_location("nomad_validate_shared", SHARED_VALIDATOR)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    check: Callable[[dict[str, Any]], list[str]] = module.problems
    return check


def _load_double() -> Callable[[dict[str, Any]], list[str]] | None:
    try:
        from doubles.validate import problems
    except ImportError:
        return None
    return problems


VALIDATORS: dict[str, Callable[[], Callable[[dict[str, Any]], list[str]] | None]] = {
    "shared": _load_shared,
    "double": _load_double,
}


@pytest.fixture(params=sorted(VALIDATORS))
def validate(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], list[str]]:
    """Each validator in turn; skipped where it is not there."""
    check = VALIDATORS[request.param]()
    if check is None:
        where = {
            "shared": SHARED_VALIDATOR,
            "double": "tests/doubles/validate.py",
        }[request.param]
        pytest.skip(f"{request.param} validator not found at {where}")
    return check


class GpuPair(yurt.App):
    machine_type = ["GPU-H100", "GPU-A100"]
    num_gpus = 1

    @yurt.endpoint("/")
    def run(self) -> None:
        return None


class Cpu(yurt.App):
    machine_type = "CPU"
    max_concurrency = 3

    @yurt.endpoint("/")
    def run(self) -> None:
        return None


def variants() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every kind of job: each example, both drivers, a GPU type list, a plain CPU app."""
    for target in ("examples/echo.py::Echo", "examples/gpu.py::GpuInfo"):
        spec = spec_of(target)
        for config in (CONFIG, DOCKER):
            yield f"{target}-{config.driver}", build_job("o/a", spec, PAYLOAD, config, count=1)
    for cls in (GpuPair, Cpu):
        for config in (CONFIG, DOCKER):
            job = build_job("team/x", build_spec(cls), PAYLOAD, config)
            yield f"{cls.__name__}-{config.driver}", job


def walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a nested JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from walk(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, key)


def pattern(machine_type: str) -> str:
    """The catalog's GPU model pattern of a machine type."""
    found = CATALOG[machine_type].gpu_model_pattern
    assert found is not None
    return found


def group(job: dict[str, Any]) -> dict[str, Any]:
    """The job's one task group."""
    (only,) = job["TaskGroups"]
    assert isinstance(only, dict)
    return only


def task(job: dict[str, Any]) -> dict[str, Any]:
    """The group's one task."""
    (only,) = group(job)["Tasks"]
    assert isinstance(only, dict)
    return only


GOLDEN_CASES = {
    "echo-raw_exec": ("examples/echo.py::Echo", CONFIG),
    "gpu-raw_exec": ("examples/gpu.py::GpuInfo", CONFIG),
    "echo-docker": ("examples/echo.py::Echo", DOCKER),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden(name: str) -> None:
    """build_job's whole output for each example equals its golden file."""
    target, config = GOLDEN_CASES[name]
    job = build_job("default/" + spec_of(target).app_name, spec_of(target), PAYLOAD, config)
    path = GOLDEN / f"{name}.json"
    text = json.dumps(job, indent=2, sort_keys=True) + "\n"
    if os.environ.get("YURT_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.is_file(), f"{path} is missing; run with YURT_UPDATE_GOLDEN=1 to write it"
    assert json.loads(path.read_text()) == job


def test_every_job_validates(validate: Callable[[dict[str, Any]], list[str]]) -> None:
    """Every kind of generated job, bare and wrapped, has no validator problems."""
    for name, job in variants():
        assert validate(job) == [], name
        assert validate(register_body(job)) == [], name


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_files_validate(name: str, validate: Callable[[dict[str, Any]], list[str]]) -> None:
    """The golden files themselves pass the validators."""
    assert validate(json.loads((GOLDEN / f"{name}.json").read_text())) == []


def test_server_job_validates(validate: Callable[[dict[str, Any]], list[str]]) -> None:
    """jobs/yurt-server.json is a valid register body that runs one yurt server."""
    body = json.loads(SERVER_JOB.read_text())
    assert validate(body) == []
    (tg,) = body["Job"]["TaskGroups"]
    assert tg["Count"] == 1
    (t,) = tg["Tasks"]
    assert t["Config"]["args"][:3] == ["server", "--backend", "nomad"]
    assert any(tmpl["Envvars"] is True for tmpl in t["Templates"])


def test_identity_and_meta() -> None:
    """ID/Name come from job_id; job and service Meta carry app, owner, revision and digest."""
    job = build_job("alice/echo", spec_of("examples/echo.py::Echo"), PAYLOAD, CONFIG)
    assert job["ID"] == job["Name"] == "yurt-alice-echo"
    assert job["Type"] == "service"
    assert job["Datacenters"] == ["dc1"]
    assert job["Meta"] == {
        "yurt_app_id": "alice/echo",
        "yurt_owner": "alice",
        "yurt_app_name": "echo",
        "yurt_revision": PAYLOAD.revision,
        "yurt_payload_sha256": SHA,
    }
    (service,) = group(job)["Services"]
    assert service["Name"] == job["ID"]
    assert service["PortLabel"] == "http"
    assert service["Provider"] == "consul"
    assert service["Meta"]["yurt_machine_type"] == "CPU"


def test_meta_env_and_tags_are_safe_strings() -> None:
    """Meta and Env values are strings; Meta keys and tags use only safe characters."""
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    for name, job in variants():
        for key, value in walk(job):
            if key in ("Meta", "Env"):
                assert all(isinstance(v, str) for v in value.values()), name
            if key == "Meta":
                assert all(set(k) <= safe for k in value), name
            if key == "Tags":
                assert all(set(t) <= safe for t in value), name


def test_durations_are_integer_nanoseconds() -> None:
    """Every duration in every job is an int (nanoseconds), never a float or a string."""
    for name, job in variants():
        found = [(k, v) for k, v in walk(job) if k in DURATION_KEYS]
        assert found, name
        for key, value in found:
            assert type(value) is int, (name, key, value)


def test_ns() -> None:
    """ns() turns seconds (int or float) into integer nanoseconds."""
    assert ns(30) == 30_000_000_000
    assert ns(0.5) == 500_000_000
    assert type(ns(2.0)) is int


def test_gpu_example_asks_for_two_h100s() -> None:
    """The GPU example asks for 2 nvidia/gpu whose model matches H100, with H100's memory."""
    job = build_job("o/gpu-info", spec_of("examples/gpu.py::GpuInfo"), PAYLOAD, CONFIG)
    floor = CATALOG["GPU-H100"].gpu_memory_mib
    assert task(job)["Resources"]["Devices"] == [
        {
            "Name": "nvidia/gpu",
            "Count": 2,
            "Constraints": [
                {"LTarget": "${device.model}", "Operand": "regexp", "RTarget": pattern("GPU-H100")},
                {"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": f"{floor} MiB"},
            ],
        }
    ]
    assert re.search(pattern("GPU-H100"), "NVIDIA H100 80GB HBM3")
    assert task(job)["Resources"]["MemoryMB"] == 65536


def test_type_list_becomes_one_alternation_and_largest_resources() -> None:
    """A two-type list gives one regexp alternation and the larger CPU/memory of the two."""
    spec = build_spec(GpuPair)
    (device,) = resources(spec)["Devices"]
    alternation = f"{pattern('GPU-H100')}|{pattern('GPU-A100')}"
    assert device["Constraints"][0] == {
        "LTarget": "${device.model}",
        "Operand": "regexp",
        "RTarget": alternation,
    }
    assert re.search(alternation, "NVIDIA A100-SXM4-80GB")
    assert re.search(alternation, "NVIDIA H100 80GB HBM3")
    assert not re.search(alternation, "NVIDIA H200")
    assert resources(spec)["MemoryMB"] == 65536  # H100's, above A100's 32768
    custom = with_overrides({"GPU-A100": {"cpu_mhz": 8000, "memory_mb": 100_000}})
    assert resources(spec, custom) | {"Devices": None} == {
        "CPU": 8000,
        "MemoryMB": 100_000,
        "Devices": None,
    }


@pytest.mark.parametrize(
    ("gpu", "memory_mib", "fits"),
    [
        ("NVIDIA H100 80GB HBM3", 81559, True),  # under 80 GiB, over the 79 GiB floor
        ("NVIDIA H100 PCIe", 30000, False),  # under every floor of the list
        ("NVIDIA A100 80GB PCIe", 81920, True),
        ("NVIDIA A100-SXM4-40GB", 40960, True),  # A100's own floor (39 GiB) is the list's
        ("NVIDIA A100-SXM4-40GB", 39000, False),
        ("NVIDIA H200", 143771, False),  # not a listed model
    ],
)
def test_gpu_memory_floor_is_the_smallest_of_the_list(
    gpu: str, memory_mib: int, fits: bool
) -> None:
    """The memory floor is the list's smallest, so a GPU of any listed type fits, and no other.

    The Nomad double matches ``${device.attr.memory}`` as Nomad does, and agrees with the
    catalog's own ``matches_gpu`` that the runner's probe uses.
    """
    nomad_double = pytest.importorskip("doubles.nomad")
    spec = build_spec(GpuPair)
    (device,) = resources(spec)["Devices"]
    floor = min(CATALOG[t].gpu_memory_mib or 0 for t in spec.machine_types)
    assert device["Constraints"][1] == {
        "LTarget": "${device.attr.memory}",
        "Operand": ">=",
        "RTarget": f"{floor} MiB",
    }
    card = {"Model": gpu, "MemoryMiB": memory_mib}
    assert nomad_double._device_fits(card, device["Constraints"]) is fits
    catalog = any(CATALOG[t].matches_gpu(gpu, memory_mib) for t in spec.machine_types)
    assert catalog is fits


def test_server_machine_changes_size_the_task_and_reach_the_runner() -> None:
    """The server's [machines] changes set the task's CPU/memory and travel to the runner."""
    custom = with_overrides({"CPU": {"cpu_mhz": 500, "memory_mb": 256}})
    assert resources(build_spec(Cpu), custom) == {"CPU": 500, "MemoryMB": 256}
    assert resources(build_spec(Cpu)) == {"CPU": 1000, "MemoryMB": 2048}
    assert gpu_device(build_spec(Cpu)) is None
    machines = {"CPU": {"cpu_mhz": 500, "memory_mb": 256}}
    job = build_job("o/cpu", build_spec(Cpu), PAYLOAD, CONFIG, machines=machines)
    (task,) = job["TaskGroups"][0]["Tasks"]
    assert task["Resources"] == {"CPU": 500, "MemoryMB": 256}
    args = task["Config"]["args"]
    assert json.loads(args[args.index("--machines") + 1]) == machines
    for name, load in VALIDATORS.items():
        check = load()
        assert check is None or check(job) == [], name


def test_cpu_and_gpu_mix_is_refused() -> None:
    """A spec mixing CPU and GPU types (build_spec refuses it too) raises AppDefinitionError."""
    spec = build_spec(GpuPair).model_copy(update={"machine_types": ["CPU", "GPU-H100"]})
    with pytest.raises(AppDefinitionError, match="mixes CPU and GPU"):
        build_job("o/a", spec, PAYLOAD, CONFIG)


@pytest.mark.parametrize("startup", [0.5, 600.0, 7200.0, 86_400.0])
def test_deadlines_bracket_startup_timeout(startup: float) -> None:
    """HealthyDeadline > startup_timeout, < ProgressDeadline; CheckRestart Grace >= startup."""
    spec = build_spec(Cpu).model_copy(update={"startup_timeout": startup})
    job = build_job("o/a", spec, PAYLOAD, CONFIG)
    update = group(job)["Update"]
    assert ns(startup) < update["HealthyDeadline"] < update["ProgressDeadline"]
    assert update["MinHealthyTime"] < update["HealthyDeadline"]
    (check,) = group(job)["Services"][0]["Checks"]
    assert check["CheckRestart"]["Grace"] >= ns(startup)
    assert check["CheckRestart"]["Limit"] == 3
    assert check["CheckRestart"]["IgnoreWarnings"] is False
    assert timings(spec, CONFIG)["Grace"] == check["CheckRestart"]["Grace"]


def test_health_check_and_update_policy() -> None:
    """One HTTP check on /_yurt/health at the configured interval; rolling, no auto-revert."""
    config = CONFIG.model_copy(update={"check_interval": 7.0, "check_timeout": 3.0})
    job = build_job("o/a", build_spec(Cpu), PAYLOAD, config)
    (check,) = group(job)["Services"][0]["Checks"]
    assert (check["Type"], check["Path"]) == ("http", HEALTH_PATH)
    # 3 s is under the runner's own 5 s check timeout: the check waits as long as the runner.
    assert (check["Interval"], check["Timeout"]) == (ns(7), ns(5))
    update = group(job)["Update"]
    # MaxParallel 0: Nomad opens no deployment, which would block scaling (see _update).
    assert (update["MaxParallel"], update["HealthCheck"]) == (0, "checks")
    assert update["AutoRevert"] is False
    assert group(job)["Scaling"] == {"Type": "horizontal", "Min": 0, "Max": 3, "Enabled": True}
    assert group(job)["RestartPolicy"]["Delay"] == ns(15)


def test_count_is_bounded_by_max_concurrency() -> None:
    """count goes into the group's Count; outside 0..max_concurrency it raises DeployError."""
    assert group(build_job("o/a", build_spec(Cpu), PAYLOAD, CONFIG, count=3))["Count"] == 3
    assert group(build_job("o/a", build_spec(Cpu), PAYLOAD, CONFIG))["Count"] == 0
    with pytest.raises(DeployError, match="max_concurrency=3"):
        build_job("o/a", build_spec(Cpu), PAYLOAD, CONFIG, count=4)


def test_raw_exec_task() -> None:
    """raw_exec runs config.python -m yurt.runner with the runner contract's arguments."""
    t = task(build_job("o/a", build_spec(Cpu), PAYLOAD, CONFIG))
    assert t["Driver"] == "raw_exec"
    assert t["Config"] == {
        "command": "/opt/yurt/venv/bin/python",
        "args": [
            "-m",
            "yurt.runner",
            "--payload-url",
            PAYLOAD.url,
            "--payload-sha256",
            SHA,
            "--host",
            "0.0.0.0",
            "--port",
            "${NOMAD_PORT_http}",
            "--runner-id",
            "${NOMAD_ALLOC_ID}",
            "--log-format",
            "json",
        ],
    }
    # The token is not in the job: the template reads it from the job's Variable.
    assert t["Env"] == {"PYTHONUNBUFFERED": "1"}
    assert PAYLOAD.token not in json.dumps(build_job("o/a", build_spec(Cpu), PAYLOAD, CONFIG))
    assert [tm["EmbeddedTmpl"] for tm in t["Templates"]] == [
        '{{ with nomadVar "nomad/jobs/yurt-o-a" }}{{ range $k, $v := . }}'
        "{{ $k }}={{ $v.Value | toJSON }}\n{{ end }}{{ end }}"
    ]
    assert t["KillSignal"] == "SIGTERM"
    assert t["KillTimeout"] >= ns(build_spec(Cpu).termination_grace_period_seconds)
    assert (
        "To"
        not in group(build_job("o/a", build_spec(Cpu), PAYLOAD, CONFIG))["Networks"][0][
            "DynamicPorts"
        ][0]
    )


def test_docker_task_maps_the_port_into_the_container() -> None:
    """docker runs the image with the runner args, maps 'http' and sets To (no runtime)."""
    job = build_job("o/gpu-info", spec_of("examples/gpu.py::GpuInfo"), PAYLOAD, DOCKER)
    t = task(job)
    assert t["Config"]["image"] == "yurt-runner:0.1.0"
    assert t["Config"]["ports"] == ["http"]
    assert t["Config"]["args"][:2] == ["--payload-url", PAYLOAD.url]
    assert "runtime" not in t["Config"]
    assert group(job)["Networks"] == [
        {"Mode": "host", "DynamicPorts": [{"Label": "http", "To": CONTAINER_PORT}]}
    ]


@pytest.mark.parametrize("python", ["python3", ".venv/bin/python", "~/venv/bin/python"])
def test_relative_python_is_a_config_error(python: str) -> None:
    """raw_exec with a python that is not an absolute path raises ConfigError naming it."""
    config = CONFIG.model_copy(update={"python": python})
    with pytest.raises(ConfigError, match="not an absolute path"):
        build_job("o/a", build_spec(Cpu), PAYLOAD, config)
    # docker does not run config.python at all
    build_job("o/a", build_spec(Cpu), PAYLOAD, config.model_copy(update={"driver": "docker"}))


def test_register_body() -> None:
    """register_body wraps the job and preserves counts unless told not to."""
    job = build_job("o/a", build_spec(Cpu), PAYLOAD, CONFIG)
    assert register_body(job) == {"Job": job, "PreserveCounts": True}
    assert register_body(job, preserve_counts=False)["PreserveCounts"] is False


class Checked(yurt.App):
    machine_type = "CPU"
    startup_timeout = 60

    @yurt.endpoint(
        "/",
        health_check=yurt.HealthCheck(
            timeout_seconds=7, failure_threshold=4, start_period_seconds=900
        ),
    )
    def run(self) -> None:
        return None


class Basic(yurt.App):
    machine_type = "CPU"

    @yurt.endpoint("/", health_check=yurt.HealthCheck(timeout_seconds=0.5, call_regularly=False))
    def run(self) -> None:
        return None


def test_app_health_check_shapes_the_consul_check() -> None:
    """The app's HealthCheck gives the check's Timeout, FailuresBeforeCritical and Grace."""
    job = build_job("o/a", build_spec(Checked), PAYLOAD, CONFIG)
    (check,) = group(job)["Services"][0]["Checks"]
    assert check["Path"] == HEALTH_PATH
    assert check["Timeout"] == ns(7)
    assert check["FailuresBeforeCritical"] == 4
    # Consul already waited for 4 failures: Nomad restarts as soon as it reports critical.
    assert check["CheckRestart"]["Limit"] == 1
    # start_period_seconds (900) outlasts startup_timeout (60): the grace covers it.
    assert check["CheckRestart"]["Grace"] > ns(900)
    assert check["CheckRestart"]["Grace"] > timings(build_spec(Checked), CONFIG)["Grace"]
    for name, load in VALIDATORS.items():
        validate = load()
        assert validate is None or validate(register_body(job)) == [], name


def test_basic_health_check_asks_for_liveness_only() -> None:
    """call_regularly=False checks ?basic=1; a sub-second timeout is raised to Nomad's 1 s."""
    job = build_job("o/a", build_spec(Basic), PAYLOAD, DOCKER)
    (check,) = group(job)["Services"][0]["Checks"]
    assert check["Path"] == "/_yurt/health?basic=1"
    assert check["Timeout"] == ns(1)
    assert check["FailuresBeforeCritical"] == 3
    for name, load in VALIDATORS.items():
        validate = load()
        assert validate is None or validate(register_body(job)) == [], name


@pytest.mark.parametrize(("configured", "expected"), [(2.0, 5.0), (5.0, 5.0), (8.0, 8.0)])
def test_default_check_timeout_is_never_under_the_runners(
    configured: float, expected: float
) -> None:
    """Without a HealthCheck the check keeps today's policy with a Timeout of at least 5 s."""
    config = CONFIG.model_copy(update={"check_timeout": configured})
    (check,) = group(build_job("o/a", build_spec(Cpu), PAYLOAD, config))["Services"][0]["Checks"]
    assert check["Timeout"] == ns(expected)
    assert (check["FailuresBeforeCritical"], check["CheckRestart"]["Limit"]) == (0, 3)


def test_shutdown_delay_is_one_check_interval() -> None:
    """ShutdownDelay (services deregistered, then the task signalled) is one check interval."""
    config = CONFIG.model_copy(update={"check_interval": 12.0})
    assert group(build_job("o/a", build_spec(Cpu), PAYLOAD, config))["ShutdownDelay"] == ns(12)
