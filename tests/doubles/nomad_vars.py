"""Nomad Variables and the task templates that read them, for the Nomad double.

Read in hashicorp/nomad aa026cc9, hashicorp/consul-template 1deacb7d and hashicorp/go-envparse
edca257e; each behaviour copied names its source line:

- ``GET /v1/var/<path>`` answers the Variable with its Items, or 404 "variable not found"
  (command/agent/variable_endpoint.go:145-164); ``PUT`` replaces every item and answers the
  Variable (:166-220), 400 "variable missing required Items object" without items (:175-177);
  ``DELETE`` answers 204 whether or not it existed (:222-269;
  nomad/state/state_store_variables.go:400-402); ``/v1/var/`` with no path is 400 "missing
  variable path" (:48-51). ``GET /v1/vars?prefix=`` lists metadata only, never Items
  (:24-45), in path order (the state store's (namespace, path) index).
- A write is checked as ``VariableDecrypted.Validate`` does (nomad/structs/variables.go:
  368-447; a 400, nomad/variables_endpoint.go:103-106 and :221-226): not the ``*`` namespace,
  at least one item, at most 64 KiB of keys and values (:53, 271-278), a path matching
  ``^[a-zA-Z0-9-_~/]{1,128}$`` (:365), and under ``nomad/`` only ``nomad/jobs...``,
  ``nomad/sentinel...`` or ``nomad/job-templates/<name>``.
- ``namespace`` comes from the query string, ``default`` without one (python-nomad does not add
  it for these endpoints, so the client must).
- A task's templates are rendered before it starts; the double renders only the one shape
  yurt writes (``appenv.secrets_template``) and fails the task on any other, so a template
  it cannot judge never passes. ``nomadVar`` blocks until the Variable exists
  (template/nomad_funcs.go:85-109, watch/view.go:293), with a "Template" event "Missing:
  nomad.var.block(<path>@<ns>.<region>)" (client/allocrunner/taskrunner/template/
  template.go:406-427; dependency/nomad_var_get.go String()). Map keys range in sorted order
  (Go's text/template); ``toJSON`` is ``json.Marshal`` (template/funcs.go:1382-1388), which
  escapes ``<``, ``>``, ``&``, U+2028 and U+2029.
- The workload identity reads only ``nomad/jobs``, ``nomad/jobs/<job>``, ``.../<group>`` and
  ``.../<group>/<task>`` in its job's namespace when no policy grants more (acl/acl.go:
  700-717); the double grants nothing more, so another path fails the task ("Template failed",
  template.go:332-335), as a cluster with ACLs on and no policy for the job would.
- An env template's file is parsed with go-envparse (template.go:1075-1098): ``KEY=value``
  lines, ``#`` comments, single and double quotes, JSON escapes inside double quotes
  (envparse.go:180-375); its variables override the task's ``Env`` (client/taskenv/
  env.go:674-675).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_SIZE = 65536
_PATH = re.compile(r"^[a-zA-Z0-9\-_~/]{1,128}$")
_TEMPLATE = re.compile(
    r'^\{\{ with nomadVar "(?P<path>[^"@]+)" \}\}\{\{ range \$k, \$v := \. \}\}'
    r"\{\{ \$k \}\}=\{\{ \$v\.Value \| toJSON \}\}\n\{\{ end \}\}\{\{ end \}\}$"
)


class VariableError(Exception):
    """An HTTP error of the Variables API: status and Nomad's text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass
class Variable:
    namespace: str
    path: str
    items: dict[str, str]
    create_index: int
    modify_index: int
    create_time: int = field(default_factory=time.time_ns)
    modify_time: int = field(default_factory=time.time_ns)

    def meta(self) -> dict[str, Any]:
        return {
            "Namespace": self.namespace,
            "Path": self.path,
            "CreateIndex": self.create_index,
            "CreateTime": self.create_time,
            "ModifyIndex": self.modify_index,
            "ModifyTime": self.modify_time,
        }

    def full(self) -> dict[str, Any]:
        return {**self.meta(), "Items": dict(self.items)}


def path_problem(path: str) -> str | None:
    """``ValidatePath`` (nomad/structs/variables.go:414-447): why Nomad refuses ``path``."""
    if not path:
        return "variable requires path"
    if not _PATH.match(path):
        return f"invalid path {path!r}"
    parts = path.split("/")
    if parts[0] != "nomad":
        return None
    if len(parts) == 1:
        return '"nomad" is a reserved top-level directory path'
    if parts[1] in ("jobs", "sentinel") or (parts[1] == "job-templates" and len(parts) == 3):
        return None
    return 'only paths at "nomad/jobs" or "nomad/job-templates" and below are valid paths'


class VariableStore:
    """Every Variable of the double, by (namespace, path); ``bump`` gives the next index."""

    def __init__(self, bump: Callable[[], int]) -> None:
        self.bump = bump
        self._vars: dict[tuple[str, str], Variable] = {}
        self.writes: list[tuple[str, str]] = []  # (namespace, path) of each write, in order

    def get(self, namespace: str, path: str) -> Variable | None:
        return self._vars.get((namespace, path))

    def put(self, namespace: str, path: str, body: Any) -> Variable:
        if not isinstance(body, dict):
            raise VariableError(400, "Request decode failed: expected an object")
        items = body.get("Items")
        if not items:
            raise VariableError(400, "variable missing required Items object")
        if not isinstance(items, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in items.items()
        ):
            raise VariableError(400, "Request decode failed: Items is a map of strings")
        if namespace == "*":
            raise VariableError(400, 'can not target wildcard ("*")namespace')
        if sum(len(k.encode()) + len(v.encode()) for k, v in items.items()) > MAX_SIZE:
            raise VariableError(400, "variables are limited to 64KiB in total size")
        if (problem := path_problem(path)) is not None:
            raise VariableError(400, problem)
        index = self.bump()
        old = self._vars.get((namespace, path))
        var = Variable(namespace, path, dict(items), old.create_index if old else index, index)
        if old is not None:
            var.create_time = old.create_time
        self._vars[(namespace, path)] = var
        self.writes.append((namespace, path))
        return var

    def delete(self, namespace: str, path: str) -> None:
        if self._vars.pop((namespace, path), None) is not None:
            self.bump()

    def list(self, namespace: str, prefix: str) -> list[dict[str, Any]]:
        found = [v for (ns, p), v in self._vars.items() if ns == namespace and p.startswith(prefix)]
        return [v.meta() for v in sorted(found, key=lambda v: v.path)]


def go_json(value: str) -> str:
    """``json.Marshal`` of a string as Go writes it (HTML characters escaped)."""
    out = json.dumps(value, ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        out = out.replace(char, escaped)
    return out


def template_path(template: dict[str, Any]) -> str:
    """The Variable path of a template the double can render; ``ValueError`` for any other."""
    found = _TEMPLATE.match(str(template.get("EmbeddedTmpl") or ""))
    if found is None or template.get("SourcePath"):
        raise ValueError(
            "the Nomad double renders only yurt's nomadVar env template, not "
            f"{str(template.get('EmbeddedTmpl'))[:80]!r}"
        )
    return found.group("path")


def render(items: dict[str, str]) -> str:
    """yurt's template over a Variable's items: ``KEY=<toJSON value>`` lines, keys sorted."""
    return "".join(f"{k}={go_json(items[k])}\n" for k in sorted(items))


def readable(path: str, job_id: str, group: str, task: str) -> bool:
    """Whether a task's workload identity may read ``path`` with no policy (acl/acl.go:709)."""
    allowed = {
        "nomad/jobs",
        f"nomad/jobs/{job_id}",
        f"nomad/jobs/{job_id}/{group}",
        f"nomad/jobs/{job_id}/{group}/{task}",
    }
    return path in allowed


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "r": "\r", "n": "\n", "t": "\t"}


def parse_env(text: str) -> dict[str, str]:
    """go-envparse's ``Parse``: ``ValueError`` where it returns an error."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"error on line {number}: missing =")
        key, value = key.strip(), value.strip()
        if len(key) > len("export "):
            key = key.removeprefix("export ")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./]*", key):
            raise ValueError(f"error on line {number}: bad key {key!r}")
        parsed = _value(value, number)
        if parsed:  # Parser.Next skips empty values (envparse.go:89)
            env[key] = parsed
    return env


def _value(value: str, number: int) -> str:
    out: list[str] = []
    mode, i, last = "normal", 0, 0
    while i < len(value):
        c = value[i]
        if ord(c) < 32:
            raise ValueError(f"error on line {number}: {ord(c):#04x} is an invalid value character")
        if mode == "normal":
            if c in "\"'":
                mode = "double" if c == '"' else "single"
            elif c == "#":
                return "".join(out[:last])
            else:
                out.append(c)
                if c not in " \t":
                    last = len(out)
        elif mode == "double" and c == "\\":
            mode = "escape"
        elif mode in ("double", "single") and c == ('"' if mode == "double" else "'"):
            mode = "normal"
        elif mode == "escape":
            if c == "u":
                code = int(value[i + 1 : i + 5], 16)
                i += 4
                if 0xD800 <= code < 0xDC00 and value[i + 1 : i + 3] == "\\u":
                    low = int(value[i + 3 : i + 7], 16)
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
                out.append(chr(code))
            elif c in _ESCAPES:
                out.append(_ESCAPES[c])
            else:
                raise ValueError(f"error on line {number}: invalid escape sequence: {c!r}")
            last, mode = len(out), "double"
        else:
            out.append(c)
            last = len(out)
        i += 1
    if mode != "normal":
        raise ValueError(f"error on line {number}: unmatched quote or incomplete escape")
    return "".join(out)
