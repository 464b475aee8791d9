"""The ``voxgate`` command: ``serve`` plus management commands on the same store.

Usage errors (bad flag, port in use) print one line on stderr and exit 2;
failed operations (unknown tenant, store unavailable) exit 1.  No tracebacks
for either: they are the user's to fix, not bugs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import msgspec

import voxgate
from voxgate.server.config import (
    SERVE_FLAGS,
    STORE_FLAGS,
    Config,
    ConfigError,
    config_from,
    env_name,
)
from voxgate.server.runtime import ListenError, ReadyInfo, Server, StartedHook
from voxgate.server.services import Services
from voxgate.server.telephony import sip_listener_hook
from voxgate.tenants.crypto import encode_master_key, generate_master_key, save_master_key
from voxgate.tenants.errors import TenantsError
from voxgate.tenants.models import ApiKeyCreate, Quotas, TenantCreate

EXIT_FAILED = 1
EXIT_USAGE = 2

_HELP = {
    "host": "address to listen on (default 127.0.0.1)",
    "http_port": "HTTP port; 0 picks a free one (default 8080)",
    "sip_port": "SIP port, UDP and TCP; 0 picks a free one (default 5060)",
    "rtp_ports": "RTP port range LOW-HIGH (default 20000-20999)",
    "data_dir": "state directory: embedded Redis, master key, blobs (default ./.voxgate)",
    "public_url": "base URL Twilio sees (signatures, stream URLs)",
    "redis_url": "external Redis (also REDIS_URL); without it Redis runs embedded",
    "milvus_uri": "external Milvus; without it Milvus runs embedded",
    "ready_file": "write JSON with the listening addresses here once everything is up",
    "drain_timeout": "seconds live calls may take to finish after SIGTERM (default 30)",
    "log_level": "debug, info, warning or error (default info)",
    "ice_servers": "STUN/TURN servers for browser calls, comma-separated: "
    "stun:HOST[:PORT], turn:USER:PASS@HOST[:PORT][?transport=udp|tcp], turns:...",
}


class UsageError(Exception):
    """Bad command line; reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _add_flags(parser: argparse.ArgumentParser, flags: Sequence[str]) -> None:
    for flag in flags:
        parser.add_argument(
            "--" + flag.replace("_", "-"),
            dest=flag,
            default=None,
            metavar=flag.split("_")[-1].upper(),
            help=f"{_HELP[flag]} [env {env_name(flag)}]",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="voxgate", description="Multi-tenant voice-agent telephony server.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the server")
    _add_flags(serve, SERVE_FLAGS)

    commands.add_parser("version", help="print the version")

    tenant = commands.add_parser("tenant", help="manage tenants")
    tenant_cmds = tenant.add_subparsers(dest="action", required=True, parser_class=_Parser)
    create = tenant_cmds.add_parser("create", help="create a tenant (prints its first API key)")
    create.add_argument("name")
    create.add_argument("--quotas", help="JSON object, e.g. '{\"max_concurrent_calls\": 4}'")
    _add_flags(create, STORE_FLAGS)
    listing = tenant_cmds.add_parser("list", help="list tenants")
    _add_flags(listing, STORE_FLAGS)
    for action, text in (
        ("show", "show one tenant as JSON"),
        ("suspend", "suspend a tenant (its keys stop working)"),
        ("resume", "resume a suspended tenant"),
        ("delete", "delete a tenant and all its data"),
    ):
        sub = tenant_cmds.add_parser(action, help=text)
        sub.add_argument("tenant_id")
        _add_flags(sub, STORE_FLAGS)

    apikey = commands.add_parser("apikey", help="manage tenant API keys")
    apikey_cmds = apikey.add_subparsers(dest="action", required=True, parser_class=_Parser)
    key_create = apikey_cmds.add_parser("create", help="create an API key (shown once)")
    key_create.add_argument("tenant_id")
    key_create.add_argument("--label", default="")
    _add_flags(key_create, STORE_FLAGS)
    key_revoke = apikey_cmds.add_parser("revoke", help="revoke an API key")
    key_revoke.add_argument("tenant_id")
    key_revoke.add_argument("key_id")
    _add_flags(key_revoke, STORE_FLAGS)

    admin = commands.add_parser("admin-token", help="manage the super-admin token")
    admin_cmds = admin.add_subparsers(dest="action", required=True, parser_class=_Parser)
    rotate = admin_cmds.add_parser("rotate", help="replace the admin token (prints the new one)")
    _add_flags(rotate, STORE_FLAGS)

    master = commands.add_parser("master-key", help="manage the secrets master key")
    master_cmds = master.add_subparsers(dest="action", required=True, parser_class=_Parser)
    master_rotate = master_cmds.add_parser(
        "rotate", help="re-wrap every tenant data key under a new master key (server stopped)"
    )
    _add_flags(master_rotate, STORE_FLAGS)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"voxgate: error: {message}", file=sys.stderr)
    return code


def configure_logging(level: str) -> None:
    """Log lines to stderr; access lines are already JSON, so they go out bare."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    access = logging.StreamHandler(sys.stderr)
    access.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    access_logger = logging.getLogger("voxgate.access")
    access_logger.addHandler(access)
    access_logger.propagate = False


def run_async(coro: Awaitable[int]) -> int:
    """Run on uvloop where available (the media core needs its timer precision)."""

    async def main() -> int:
        return await coro

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a core dependency on Linux
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def announce(ready: ReadyInfo) -> None:
    if ready.admin_token is not None:
        print(
            f"Admin token (shown once; stored hashed): {ready.admin_token}",
            flush=True,
        )
    print(f"voxgate listening on {ready.http}", flush=True)


async def serve(
    config: Config,
    on_started: Sequence[StartedHook] = (),
    announcer: Callable[[ReadyInfo], None] = announce,
) -> int:
    server = Server(config, on_started=on_started)
    server.listener_hooks.append(sip_listener_hook(server))
    try:
        await server.run(announcer)
    except ListenError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except TenantsError as exc:
        return _fail(exc.message, EXIT_FAILED)
    except OSError as exc:  # e.g. data dir not writable
        return _fail(str(exc), EXIT_FAILED)
    return 0


def _print_json(value: Any) -> None:
    print(json.dumps(msgspec.to_builtins(value), indent=2, sort_keys=True))


async def _manage(config: Config, args: argparse.Namespace) -> int:
    services = await Services.open(config)
    try:
        return await _dispatch(services, config, args)
    finally:
        await services.close()


async def _dispatch(services: Services, config: Config, args: argparse.Namespace) -> int:
    actor = "cli"
    if args.command == "tenant":
        if args.action == "create":
            quotas = None
            if args.quotas is not None:
                try:
                    quotas = msgspec.json.decode(args.quotas, type=Quotas)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    raise UsageError(f"--quotas: {exc}") from None
            created = await services.registry.create(
                TenantCreate(name=args.name, quotas=quotas), actor
            )
            print(f"tenant {created.id} ({created.name}) created")
            print(f"API key (shown once): {created.api_key}")
        elif args.action == "list":
            _tenant_table(await services.registry.list())
        elif args.action == "show":
            _print_json(await services.registry.get(args.tenant_id))
        elif args.action == "suspend":
            await services.registry.suspend(args.tenant_id, actor)
            print(f"tenant {args.tenant_id} suspended")
        elif args.action == "resume":
            await services.registry.resume(args.tenant_id, actor)
            print(f"tenant {args.tenant_id} resumed")
        elif args.action == "delete":
            await services.registry.delete(args.tenant_id, actor)
            print(f"tenant {args.tenant_id} deleted")
    elif args.command == "apikey":
        await services.registry.get(args.tenant_id)
        if args.action == "create":
            key = await services.apikeys.create(args.tenant_id, ApiKeyCreate(label=args.label))
            print(f"API key {key.id} (shown once): {key.api_key}")
        else:
            await services.apikeys.revoke(args.tenant_id, args.key_id)
            print(f"API key {args.key_id} revoked")
    elif args.command == "admin-token":
        token = await services.admin_tokens.rotate()
        print(f"New admin token (shown once; stored hashed): {token}")
    elif args.command == "master-key":
        await _rotate_master_key(services, config)
    return 0


async def _rotate_master_key(services: Services, config: Config) -> None:
    """Re-wrap data keys under a fresh master key without ever losing the key in use.

    The new key is written to ``master.key.rotating`` before Redis changes, so
    a crash half-way leaves it recoverable; it becomes ``master.key`` after.
    """
    new_key = generate_master_key()
    if config.master_key is not None:
        count = await services.secrets.rotate_master(new_key)
        print(f"re-wrapped {count} key(s); set VOXGATE_MASTER_KEY to the new key before the")
        print(f"next start (shown once): {encode_master_key(new_key)}")
        return
    pending = config.data_dir / "master.key.rotating"
    await asyncio.to_thread(_write_private, pending, encode_master_key(new_key) + "\n")
    count = await services.secrets.rotate_master(new_key)
    await asyncio.to_thread(save_master_key, config.data_dir, new_key)
    await asyncio.to_thread(pending.unlink)
    print(f"master key rotated; re-wrapped {count} key(s)")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


def _tenant_table(tenants: Sequence[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Tenants")
    for column in ("id", "name", "status", "calls", "workers", "agents"):
        table.add_column(column)
    for tenant in tenants:
        quotas = tenant.quotas
        table.add_row(
            tenant.id,
            tenant.name,
            tenant.status,
            str(quotas.max_concurrent_calls),
            str(quotas.max_workers),
            str(quotas.max_agents),
        )
    Console().print(table)


def main(
    argv: Sequence[str] | None = None,
    *,
    on_started: Sequence[StartedHook] = (),
    announcer: Callable[[ReadyInfo], None] = announce,
    command: Callable[[Config, argparse.Namespace], Awaitable[int]] | None = None,
) -> int:
    """Entry point of the ``voxgate`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "version":
            print(f"voxgate {voxgate.__version__}")
            return 0
        flags = {name: getattr(args, name, None) for name in SERVE_FLAGS}
        config = config_from(flags, dict(os.environ))
        configure_logging(config.log_level if args.command == "serve" else "error")
        if args.command == "serve":
            return run_async(serve(config, on_started, announcer))
        return run_async((command or _manage)(config, args))
    except (UsageError, ConfigError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except TenantsError as exc:
        return _fail(exc.message, EXIT_FAILED)
    except KeyboardInterrupt:
        return 130
