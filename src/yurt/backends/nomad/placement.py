"""Where an app's runners may go and what they reserve, from its machine type(s). Pure.

The job's node pool and constraints (``placement``), the task's CPU, memory and GPU request
(``resources``, ``gpu_device``), all read from the machine catalog with the server's changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yurt.config import NomadConfig
from yurt.errors import AppDefinitionError
from yurt.machines import CATALOG, MachineType
from yurt.spec import AppSpec


def placement(
    spec: AppSpec, catalog: Mapping[str, MachineType], config: NomadConfig
) -> tuple[str, list[dict[str, str]]]:
    """The node pool and the constraints of the app's runners, from its machine type(s).

    A job has one node pool (``Job.NodePool``), and constraints all hold, so the types an
    app lists as fallbacks must agree on both: otherwise no node of one type's pool could take
    a runner of the other, and that is an ``AppDefinitionError`` naming the difference.
    """
    types = machine_types(spec, catalog)
    seen = {(t.node_pool or config.node_pool, t.constraints) for t in types}
    if len(seen) > 1:
        listed = "; ".join(
            f"{t.name}: node_pool={t.node_pool or config.node_pool!r}, "
            f"constraints={[c.nomad() for c in t.constraints]}"
            for t in types
        )
        raise AppDefinitionError(
            f"{spec.class_name}: machine_type {spec.machine_types} places its types apart "
            f"({listed}); one Nomad job has one node pool and constraints that all hold: "
            "list only types with the same placement, or give them the same [machines] "
            "node_pool and constraints"
        )
    pool, constraints = seen.pop()
    return pool, [c.nomad() for c in constraints]


def machine_types(spec: AppSpec, catalog: Mapping[str, MachineType]) -> list[MachineType]:
    unknown = [t for t in spec.machine_types if t not in catalog]
    if unknown or not spec.machine_types:
        raise AppDefinitionError(
            f"{spec.class_name}: machine_type {spec.machine_types} has no entry in the catalog "
            f"for {unknown}; use names from yurt.machines.knownmachine_types()"
        )
    types = [catalog[t] for t in spec.machine_types]
    if len({t.gpu for t in types}) > 1:
        # build_spec refuses this too; a hand-made AppSpec must not slip a CPU into GPU fallbacks.
        raise AppDefinitionError(
            f"{spec.class_name}: machine_type {spec.machine_types} mixes CPU and GPU types; "
            "list only GPU types as fallbacks for each other"
        )
    return types


def resources(spec: AppSpec, catalog: Mapping[str, MachineType] = CATALOG) -> dict[str, Any]:
    """The task's Resources: CPU and memory of the machine type(s), and GPUs if any.

    ``catalog`` is the machine catalog with the server's changes applied. A list of machine
    types reserves the largest CPU and the largest memory among them, so that a runner fits
    whichever type it lands on.
    """
    types = machine_types(spec, catalog)
    out: dict[str, Any] = {
        "CPU": max(t.cpu_mhz for t in types),
        "MemoryMB": max(t.memory_mb for t in types),
    }
    device = gpu_device(spec, catalog)
    if device is not None:
        out["Devices"] = [device]
    return out


def gpu_device(
    spec: AppSpec, catalog: Mapping[str, MachineType] = CATALOG
) -> dict[str, Any] | None:
    """The ``nvidia/gpu`` request of a GPU app, or None for a CPU app.

    A list of GPU types becomes one alternation (``H100|A100``); Nomad takes all GPUs of one
    request from one node and one model. A type without a model pattern accepts any model, and
    then so does the whole list. The memory floor (``gpu_memory_mib``, which the runner's probe
    and the local allocator check too) is the smallest of the list, so that a GPU of any listed
    type qualifies; a type without a floor drops it for the whole list.
    """
    types = machine_types(spec, catalog)
    if not types[0].gpu:
        return None
    if spec.num_gpus < 1:
        raise AppDefinitionError(
            f"{spec.class_name}: machine_type {spec.machine_types} needs num_gpus >= 1, "
            f"got {spec.num_gpus}"
        )
    device: dict[str, Any] = {"Name": "nvidia/gpu", "Count": spec.num_gpus}
    constraints: list[dict[str, str]] = []
    patterns = [t.gpu_model_pattern for t in types]
    if all(patterns):
        # Concatenation binds tighter than '|', so joining whole patterns is always sound.
        pattern = "|".join(dict.fromkeys(p for p in patterns if p))
        constraints.append({"LTarget": "${device.model}", "Operand": "regexp", "RTarget": pattern})
    floors = [t.gpu_memory_mib for t in types]
    if all(floors):
        # ${device.attr.memory} is MiB as NVML reports it: an H100 80GB has 81559, under 80 GiB.
        floor = min(f for f in floors if f)
        constraints.append(
            {"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": f"{floor} MiB"}
        )
    if constraints:
        device["Constraints"] = constraints
    return device
