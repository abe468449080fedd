"""``yurt keys create|list|revoke``: the API keys callers send as ``Authorization: Key``
(fal's ``FAL_KEY``). Against a server's admin API by default; ``--data-dir`` works on a data
dir of this machine directly (what a ``yurt run`` serving from it reads within a second)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any

from yurt.cli.options import add_debug_option, report_error
from yurt.errors import YurtError


def add_parser(commands: Any) -> None:
    """Register ``keys`` and its three subcommands on the subcommand parser."""
    p: argparse.ArgumentParser = commands.add_parser(
        "keys", help="create, list or revoke API keys (Authorization: Key, fal's FAL_KEY)"
    )
    sub = p.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    create = sub.add_parser("create", help="make a key and print id:secret, shown this once")
    create.add_argument(
        "--scope",
        choices=("API", "ADMIN"),
        default="API",
        help="API calls apps; ADMIN also deploys and manages (default: API)",
    )
    create.add_argument("--alias", default=None, help="a name to tell the key by")
    list_p = sub.add_parser("list", help="ids, aliases, scopes, when made and last used")
    revoke = sub.add_parser("revoke", help="revoke a key: requests with it get 401")
    revoke.add_argument("key_id", metavar="ID")
    for q in (create, list_p, revoke):
        where = q.add_mutually_exclusive_group()
        where.add_argument(
            "--server", default=None, metavar="URL", help="default: $YURT_SERVER or :8080 here"
        )
        where.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            metavar="DIR",
            help="work on this data dir directly instead of through a server",
        )
        q.add_argument(
            "--token", default=None, help="admin token or ADMIN key (default: $YURT_ADMIN_TOKEN)"
        )
        q.add_argument("--json", action="store_true", help="print the result as JSON")
        add_debug_option(q)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Carry out one subcommand; returns the exit code."""
    try:
        if args.data_dir is not None:
            _local(args)
        else:
            _remote(args)
    except YurtError as exc:
        report_error(f"yurt keys {args.keys_command}", exc, debug=args.debug)
        return 1
    return 0


def _remote(args: argparse.Namespace) -> None:
    from yurt.deployment import create_key, list_keys, revoke_key

    where = {"server": args.server, "token": args.token}
    if args.keys_command == "create":
        entry, key = create_key(args.scope, args.alias, **where)
        _created(args, dataclasses.asdict(entry), key)
    elif args.keys_command == "revoke":
        revoke_key(args.key_id, **where)
        _revoked(args)
    else:
        _listed(args, [dataclasses.asdict(k) for k in list_keys(**where)])


def _local(args: argparse.Namespace) -> None:
    from yurt.errors import DeployError
    from yurt.keys import KeyStore

    store = KeyStore(args.data_dir)
    if args.keys_command == "create":
        info, key = store.create(args.scope, args.alias, time.time())
        _created(args, dataclasses.asdict(info), key)
    elif args.keys_command == "revoke":
        if not store.revoke(args.key_id):
            raise DeployError(f"no key {args.key_id!r} in {args.data_dir}; `yurt keys list`")
        _revoked(args)
    else:
        _listed(args, [dataclasses.asdict(k) for k in store.list()])


def _created(args: argparse.Namespace, entry: dict[str, Any], key: str) -> None:
    if args.json:
        print(json.dumps({**entry, "key": key}), flush=True)
        return
    print(key, flush=True)  # alone on stdout: FAL_KEY=$(yurt keys create)


def _revoked(args: argparse.Namespace) -> None:
    reply = {"key_id": args.key_id, "outcome": "revoked"}
    print(json.dumps(reply) if args.json else f"yurt: revoked {args.key_id}", flush=True)


def _listed(args: argparse.Namespace, keys: list[dict[str, Any]]) -> None:
    if args.json:
        print(json.dumps(keys), flush=True)
        return
    for k in keys:
        used = _when(k["last_used"]) if k["last_used"] is not None else "never used"
        alias = k["alias"] or "-"
        print(f"{k['key_id']}\t{k['scope']}\t{alias}\t{_when(k['created_at'])}\t{used}")


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds")
