"""What a runner task gets beside its payload: a Variable's items as environment variables, and
its app's environment from the runner's bootstrap. Pure: no I/O.

Secrets and the payload token reach a runner through one Nomad Variable per job,
``nomad/jobs/<job id>``, which the server writes before it registers the job. The task reads it
with a ``template`` rendered into an env file (``Envvars``), so neither is in the job body,
where anyone allowed to read the job would read them. Facts this follows (hashicorp/nomad
aa026cc9, hashicorp/consul-template 1deacb7d, hashicorp/go-envparse edca257e):

- a task's workload identity may read and list ``nomad/jobs``, ``nomad/jobs/<job>``,
  ``nomad/jobs/<job>/<group>`` and ``nomad/jobs/<job>/<group>/<task>`` in its job's namespace
  with no ACL policy written for it (acl/acl.go:692-717): the per-job path works on a cluster
  with ACLs on, and no other path would without a policy;
- ``nomadVar`` blocks the template (and the task's start) until the Variable exists
  (template/nomad_funcs.go:85-109 sets EnableBlocking; watch/view.go:293 loops on a nil reply);
- ``toJSON`` is Go's ``json.Marshal`` (template/funcs.go:1382-1388), and the env file is read
  with go-envparse, which decodes JSON's escapes inside double quotes (envparse.go:278-330)
  (client/allocrunner/taskrunner/template/template.go:1075-1098): any value, newlines and
  quotes included, comes through unchanged;
- a Variable holds at most 64 KiB of keys and values in all (nomad/structs/variables.go:53,
  378), and its path matches ``^[a-zA-Z0-9-_~/]{1,128}$`` (variables.go:365);
- a template's ``ChangeMode`` ``noop`` leaves a running task alone when the Variable changes;
  an env template may not use ``signal`` (nomad/structs/structs.go:8955-8963).
"""

from __future__ import annotations

import json
from typing import Any

from yurt.backends.nomad.naming import TOKEN_ENV
from yurt.config import EnvsConfig, NomadConfig
from yurt.runner.contract import RUNNER_TOKEN_ENV
from yurt.spec import AppSpec

__all__ = [
    "ENVS_MOUNT",
    "ENVS_VOLUME",
    "SECRETS_FILE",
    "bootstrap_args",
    "builds_environment",
    "job_variable",
    "secrets_template",
    "uses_bootstrap",
    "variable_items",
]

# Relative to the task directory: ``secrets/`` is the task's own (0700 on the node), and is
# not shared with other tasks of the allocation as ``alloc/`` is.
SECRETS_FILE = "secrets/yurt.env"
ENVS_VOLUME = "yurt-envs"  # the group's volume caching environments (docker)
ENVS_MOUNT = "/yurt-envs"  # where it is mounted in the task
NS_PER_S = 1_000_000_000
SPLAY_S = 5  # Nomad's default for a template's Splay (api/tasks.go:994-996)


def job_variable(job_name: str) -> str:
    """The Variable a job's tasks read (its workload identity may, with no policy)."""
    return f"nomad/jobs/{job_name}"


def variable_items(token: str, secrets: dict[str, str], runner_token: str = "") -> dict[str, str]:
    """The job Variable's items: the payload token, the runners' token (what the router shows
    them, ``yurt.runner.token``) and every secret, by environment name.

    A secret's name never starts with ``YURT_`` (``name_problem``), so none hides a token.
    """
    items = {**secrets, TOKEN_ENV: token}
    if runner_token:
        items[RUNNER_TOKEN_ENV] = runner_token
    return items


def secrets_template(job_name: str) -> dict[str, Any]:
    """The task's Template: every item of the job's Variable as ``NAME="json"`` lines, read
    into the task's environment; Nomad's other defaults written out (api/tasks.go:965-1015)."""
    path = job_variable(job_name)
    body = (
        f'{{{{ with nomadVar "{path}" }}}}{{{{ range $k, $v := . }}}}'
        "{{ $k }}={{ $v.Value | toJSON }}\n{{ end }}{{ end }}"
    )
    return {
        "SourcePath": "",
        "DestPath": SECRETS_FILE,
        "EmbeddedTmpl": body,
        "ChangeMode": "noop",  # a runner keeps what it started with, as on the local backend
        "ChangeSignal": "",
        "Splay": SPLAY_S * NS_PER_S,
        "Perms": "0600",
        "LeftDelim": "{{",
        "RightDelim": "}}",
        "Envvars": True,
        "ErrMissingKey": False,
        "Once": False,
        "VaultGrace": 0,
    }


def builds_environment(spec: AppSpec, config: NomadConfig) -> bool:
    """Whether the task builds the app's environment from its requirements.

    Not with the docker driver and an app ``image``: the image is the app's environment.
    """
    if not spec.requirements:
        return False
    return not (config.driver == "docker" and spec.image)


def uses_bootstrap(spec: AppSpec, config: NomadConfig) -> bool:
    """Whether the task starts with ``yurt.runner.bootstrap`` (an environment to build, or
    secrets to check) rather than ``yurt.runner`` at once."""
    return builds_environment(spec, config) or bool(spec.required_secrets)


def bootstrap_args(spec: AppSpec, config: NomadConfig, envs: EnvsConfig) -> list[str]:
    """The bootstrap's options (the runner's arguments follow after ``--``).

    Environments are kept in ``[nomad] envs_dir`` (raw_exec: a directory of the node), in the
    ``envs_volume`` mounted at ``ENVS_MOUNT`` (docker), else in the allocation's directory.
    The installer and its arguments are the server's ``[envs]``: pip on the node still reads
    the node's own configuration (pip.conf, ``PIP_*`` in the Nomad client's environment).
    """
    out: list[str] = []
    if builds_environment(spec, config):
        out += ["--requirements", json.dumps(spec.requirements, separators=(",", ":"))]
        if config.envs_dir:
            out += ["--envs-dir", config.envs_dir]
        elif config.envs_volume is not None and config.driver == "docker":
            out += ["--envs-dir", ENVS_MOUNT]
        out += ["--installer", envs.installer]
        out += [f"--pip-arg={arg}" for arg in envs.pip_args]
    for name in spec.required_secrets:
        out += ["--require-secret", name]
    return out
