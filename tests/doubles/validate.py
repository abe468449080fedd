"""Strict checks of a Nomad job body against the structs of Nomad's Go ``api`` package.

Nomad decodes job JSON leniently (a misspelled or wrongly cased key is silently dropped and a
default used instead), so this is stricter than Nomad wherever Nomad would quietly accept:

- every key must be an exact Go field name of the struct at that place (PascalCase);
- durations (``time.Duration``) are integers in nanoseconds (``"30s"`` is a 400 decode error);
- ``Meta`` and ``Env`` maps hold strings; Constraint/Affinity need an ``Operand``;
- ``HealthyDeadline`` < ``ProgressDeadline`` where both are set;

and what Nomad's own job validation adds (NOMAD_CONSUL.md):

- ``Job.ID`` is required;
- service checks of type http/tcp/grpc need ``Interval`` and ``Timeout``, each at least 1 s;
- a group's ``Scaling`` needs ``Max``, and ``Count`` must lie within ``Scaling.Min``/``Max``;
- raw_exec's ``Config.command`` is an absolute path;
- a template has something to render and a ``DestPath`` inside the allocation, a known
  ``ChangeMode`` (``signal`` needs a signal and no ``Envvars``) and octal ``Perms``
  (nomad/structs/structs.go:8933-8992 at hashicorp/nomad aa026cc9).

The struct table ``nomad-api-structs.json`` beside this file was extracted from hashicorp/nomad
``api/*.go``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TypeGuard

_TABLE = json.loads((Path(__file__).parent / "nomad-api-structs.json").read_text())
STRUCTS: dict[str, dict[str, Any]] = _TABLE["structs"]
ALIASES: dict[str, str] = _TABLE["aliases"]

_INTS = {"int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64"}
_SECOND = 1_000_000_000
_CHECK_TYPES_WITH_INTERVAL = {"http", "tcp", "grpc", "script"}

__all__ = ["problems"]


def _fields(struct: str) -> dict[str, str]:
    fields = {k: v for k, v in STRUCTS.get(struct, {}).items() if k != "__embedded__"}
    for base in STRUCTS.get(struct, {}).get("__embedded__", []):
        fields.update(_fields(base))
    return fields


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(value: Any, gotype: str, where: str, out: list[str]) -> None:
    """Append to ``out`` every way ``value`` does not decode exactly as Go type ``gotype``."""
    t = gotype.lstrip("*")
    if value is None:
        return
    if t in ALIASES and t not in STRUCTS:
        t = ALIASES[t]
    if t == "time.Duration":
        if not _is_int(value):
            out.append(f"{where}: duration must be an integer number of nanoseconds, got {value!r}")
    elif t.startswith("[]") and t != "[]byte":
        if not isinstance(value, list):
            out.append(f"{where}: expected a list for {gotype}, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, t[2:], f"{where}[{i}]", out)
    elif t.startswith("map["):
        if not isinstance(value, dict):
            out.append(f"{where}: expected an object for {gotype}, got {type(value).__name__}")
            return
        elem = t[t.index("]") + 1 :]
        for k, v in value.items():
            _check(v, elem, f"{where}.{k}", out)
    elif t == "string":
        if not isinstance(value, str):
            out.append(f"{where}: expected a string, got {value!r}")
    elif t == "bool":
        if not isinstance(value, bool):
            out.append(f"{where}: expected a boolean, got {value!r}")
    elif t in _INTS:
        if not _is_int(value):
            out.append(f"{where}: expected an integer, got {value!r}")
    elif t in ("float64", "float32"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            out.append(f"{where}: expected a number, got {value!r}")
    elif t in ("any", "interface{}", "[]byte"):
        return
    elif t in STRUCTS:
        _check_struct(value, t, where, out)
    else:
        out.append(f"{where}: unknown Go type {gotype!r} in the struct table")


def _check_struct(value: Any, t: str, where: str, out: list[str]) -> None:
    if not isinstance(value, dict):
        out.append(f"{where}: expected an object ({t}), got {type(value).__name__}")
        return
    fields = _fields(t)
    for key, sub in value.items():
        if key not in fields:
            near = [f for f in fields if f.lower() == key.lower()]
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            out.append(
                f"{where}.{key}: not a field of Nomad's {t}{hint}; Nomad would silently drop it"
            )
            continue
        _check(sub, fields[key], f"{where}.{key}", out)
    if t in ("Constraint", "Affinity") and not value.get("Operand"):
        out.append(f"{where}: {t} needs an Operand in JSON (only HCL defaults it to '=')")
    if t == "UpdateStrategy":
        hd, pd = value.get("HealthyDeadline"), value.get("ProgressDeadline")
        if _is_int(hd) and _is_int(pd) and pd and hd >= pd:
            out.append(f"{where}: HealthyDeadline must be shorter than ProgressDeadline")


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _check_services(services: Any, where: str, out: list[str]) -> None:
    for i, service in enumerate(_dicts(services)):
        for j, check in enumerate(_dicts(service.get("Checks"))):
            at = f"{where}.Services[{i}].Checks[{j}]"
            if str(check.get("Type", "")).lower() not in _CHECK_TYPES_WITH_INTERVAL:
                continue
            for name in ("Interval", "Timeout"):
                value = check.get(name)
                if not _is_int(value):
                    if value is None:
                        out.append(f"{at}.{name}: required for a {check.get('Type')} check")
                    continue
                if value < _SECOND:
                    out.append(f"{at}.{name}: must be at least 1s (1000000000 ns), got {value}")


def _check_group(group: dict[str, Any], where: str, out: list[str]) -> None:
    scaling = group.get("Scaling")
    count = group.get("Count")
    if isinstance(scaling, dict):
        low, high = scaling.get("Min"), scaling.get("Max")
        if high is None:
            out.append(f"{where}.Scaling.Max: required when a group has a scaling block")
        if _is_int(low) and _is_int(high) and low > high:
            out.append(f"{where}.Scaling: Min {low} is greater than Max {high}")
        if _is_int(count) and _is_int(low) and count < low:
            out.append(f"{where}.Count: {count} is less than Scaling.Min {low}")
        if _is_int(count) and _is_int(high) and count > high:
            out.append(f"{where}.Count: {count} is greater than Scaling.Max {high}")
    _check_services(group.get("Services"), where, out)
    for k, task in enumerate(_dicts(group.get("Tasks"))):
        at = f"{where}.Tasks[{k}]"
        _check_services(task.get("Services"), at, out)
        for m, template in enumerate(_dicts(task.get("Templates"))):
            _check_template(template, f"{at}.Templates[{m}]", out)
        config = task.get("Config")
        if task.get("Driver") == "raw_exec" and isinstance(config, dict):
            command = config.get("command")
            if not isinstance(command, str) or not command.startswith("/"):
                out.append(f"{at}.Config.command: raw_exec needs an absolute path, got {command!r}")


def _check_template(template: dict[str, Any], at: str, out: list[str]) -> None:
    """``Template.Validate`` (structs.go:8933-8992), after the api's defaults (api/tasks.go:965)."""
    if not template.get("SourcePath") and not template.get("EmbeddedTmpl"):
        out.append(f"{at}: Must specify a source path or have an embedded template")
    dest = str(template.get("DestPath") or "")
    if not dest:
        out.append(f"{at}: Must specify a destination for the template")
    elif dest.startswith("/") or ".." in dest.split("/"):
        out.append(f"{at}.DestPath: destination escapes allocation directory")
    mode = template.get("ChangeMode") or "restart"
    if mode not in ("noop", "restart", "signal", "script"):
        out.append(f"{at}.ChangeMode: invalid change mode {mode!r}")
    if mode == "signal" and (not template.get("ChangeSignal") or template.get("Envvars")):
        out.append(f"{at}: a signal change mode needs ChangeSignal and no Envvars")
    perms = template.get("Perms")
    if perms and not re.fullmatch(r"[0-7]{1,4}", str(perms)):
        out.append(f"{at}.Perms: Failed to parse {perms!r} as octal")


def problems(job: dict[str, Any]) -> list[str]:
    """Problems of a job register body (``{"Job": {...}}``) or of a bare job object."""
    out: list[str] = []
    if isinstance(job, dict) and "Job" in job:
        _check(job, "JobRegisterRequest", "$", out)
        inner = job.get("Job") or {}
        prefix = "$.Job"
    else:
        _check(job, "Job", "$", out)
        inner = job
        prefix = "$"
    if not isinstance(inner, dict) or not inner.get("ID"):
        out.append(f"{prefix}.ID: required")
        return out
    for i, group in enumerate(_dicts(inner.get("TaskGroups"))):
        _check_group(group, f"{prefix}.TaskGroups[{i}]", out)
    return out
