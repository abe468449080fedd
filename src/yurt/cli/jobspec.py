"""``yurt jobspec FILE::Class``: print the Nomad job that ``yurt deploy`` would have submitted.

The job is built here, from the App and the configuration (``--config``, flags, Nomad's
variables), exactly as the server builds it. What only the server knows is shown as
placeholders: the server's URL unless ``--server`` is given, and unless ``[nomad]
datacenters`` is set the datacenter (the server asks its Consul agent). The payload token and
the secrets are not in the job: the server writes them into the job's Nomad Variable
(``nomad/jobs/<job>``) before it registers the job, whose task waits for that Variable.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from yurt.cli.options import add_cluster_options, add_config_option, config_from_args
from yurt.config import server_url_env
from yurt.errors import YurtError

TOKEN_PLACEHOLDER = "<payload token: issued by the server at deploy>"
DATACENTER_PLACEHOLDER = "<the Consul agent's datacenter: read by the server at start>"


def add_parser(commands: Any) -> None:
    """Register ``jobspec`` on the subcommand parser."""
    p: argparse.ArgumentParser = commands.add_parser(
        "jobspec", help="print the Nomad job JSON that `yurt deploy` would submit"
    )
    p.add_argument("target", metavar="FILE::Class", help="e.g. examples/echo.py::Echo")
    add_config_option(p)
    add_cluster_options(p)
    p.add_argument("--owner", default=None, help="owner segment of the app's URL")
    p.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="the server runners fetch payloads from (default: $YURT_SERVER or :8080 here)",
    )
    p.add_argument("--count", type=int, default=0, help="the group's Count (default 0)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the job; returns the exit code."""
    from yurt.backends.nomad.jobspec import build_job, register_body
    from yurt.backends.nomad.naming import PayloadRef
    from yurt.files.location import cluster_env
    from yurt.loader import load_app
    from yurt.packaging import pack, read_header
    from yurt.spec import build_spec

    try:
        config = config_from_args(args)
        cls = load_app(args.target)
        spec = build_spec(cls)
        header, _ = read_header(pack(cls))
        base = (args.server or config.router.public_url or server_url_env()).rstrip("/")
        ref = PayloadRef(
            url=f"{base}/_yurt/api/v1/payloads/{header.sha256}",
            sha256=header.sha256,
            token=TOKEN_PLACEHOLDER,
            revision=header.revision,
            env=cluster_env(base, config.files.ttl, header.sha256),
        )
        owner = args.owner or config.router.owner
        job = build_job(
            f"{owner}/{spec.app_name}",
            spec,
            ref,
            config.nomad,
            count=args.count,
            machines=config.machine_overrides(),
            datacenters=(DATACENTER_PLACEHOLDER,),
        )
    except YurtError as exc:
        print(f"yurt jobspec: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(register_body(job), indent=2))
    return 0
