"""The `auth-server` command: serve (default), bridge, `user set-role` for bootstrapping an admin, and
`service create|list|rotate|delete` for service accounts (auth_server/domain/services.py), and `purge`,
one run of the job every server runs every AUTH_PURGE_INTERVAL (auth_server/domain/purge.py).

`serve` runs the gRPC server and the HTTP bridge (auth_server/http) in one process; `bridge` runs
the bridge alone in front of a gRPC server elsewhere. SIGTERM/SIGINT stop both cleanly (exit 0).

Configuration errors and an unreachable store end the process with a one-line message and exit code
2 or 1, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading

from auth_server.infra.config import ConfigError, Settings, bridge_url, check_addr, load_settings, redact_uri
from auth_server.runtime import logs
from auth_server.runtime.banner import serving_banner
from auth_server.runtime.signals import StopRequest
from auth_server.store.base import StoreUnavailable

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 1


def _positive(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:  # isdigit() alone accepts "²"
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return int(value)


def _non_negative(value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds (0 or more), got {value!r}")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auth-server", description="gRPC authentication service")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the gRPC server and the HTTP bridge (the default command)")
    serve.add_argument("--grpc-addr", help="listen address (AUTH_GRPC_ADDR)")
    serve.add_argument("--http-addr", help="HTTP bridge listen address (AUTH_HTTP_ADDR)")
    serve.add_argument("--store", help="sqlite:///path or mongodb://... (AUTH_STORE)")
    serve.add_argument(
        "--workers", type=_positive, default=1, help="server processes sharing the gRPC port (SO_REUSEPORT)"
    )
    bridge = sub.add_parser("bridge", help="run the HTTP bridge alone, in front of a gRPC server")
    bridge.add_argument("--upstream", help="gRPC server HOST:PORT (default: from AUTH_GRPC_ADDR)")
    bridge.add_argument("--http-addr", help="HTTP bridge listen address (AUTH_HTTP_ADDR)")
    user = sub.add_parser("user", help="operator commands on users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    set_role = user_sub.add_parser("set-role", help="set a user's role (bootstrap the first admin)")
    set_role.add_argument("username")
    set_role.add_argument("role", choices=["user", "manager", "admin"])
    set_role.add_argument("--tenant", help="tenant id (default: AUTH_DEFAULT_TENANT)")
    set_role.add_argument("--store", help="sqlite:///path or mongodb://... (AUTH_STORE)")
    set_role.add_argument("--force", action="store_true", help="demote even the tenant's last active admin")
    service = sub.add_parser("service", help="operator commands on service accounts (callers that are not people)")
    service_sub = service.add_subparsers(dest="service_command", required=True)
    create = service_sub.add_parser("create", help="create a service account; prints its client id and secret once")
    create.add_argument("name")
    create.add_argument("--tenants", default="", help="comma list of tenants it may call in (default: all)")
    create.add_argument("--json", action="store_true", help='print {"name", "client_id", "client_secret"}')
    listing = service_sub.add_parser("list", help="list service accounts (never a secret)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    rotate = service_sub.add_parser("rotate", help="give a service account a new secret")
    rotate.add_argument("name")
    rotate.add_argument(
        "--overlap", type=_non_negative, default=3600, help="seconds the old secret keeps working (default 3600)"
    )
    rotate.add_argument("--json", action="store_true", help='print {"name", "client_id", "client_secret"}')
    delete = service_sub.add_parser("delete", help="delete a service account; its tokens stop working at once")
    delete.add_argument("name")
    for command in (create, listing, rotate, delete):
        command.add_argument("--store", help="sqlite:///path or mongodb://... (AUTH_STORE)")
    purge = sub.add_parser("purge", help="delete ended sessions, challenges, counters, old audit events now, once")
    purge.add_argument("--store", help="sqlite:///path or mongodb://... (AUTH_STORE)")
    purge.add_argument("--json", action="store_true", help="print {tenant: {kind: count}}")
    return parser


def warm_up_in_background() -> None:
    """Build the user-agent parser (~0.2-0.4 s of CPU) off the request path, so the first sign-in after
    a start does not wait for it (auth_server/domain/devices.py)."""
    from auth_server.domain import devices

    threading.Thread(target=devices.warm_up, name="warm-up", daemon=True).start()


def _public_url_from(settings: Settings, http_port: int) -> Settings:
    """AUTH_PUBLIC_URL, when not set, is where the bridge really listens: with AUTH_HTTP_ADDR's port 0
    that port is known only once bound (unlock links in e-mails must reach it)."""
    if settings.public_url != bridge_url(settings.http_addr):
        return settings  # the operator's own URL
    host = settings.http_addr.rpartition(":")[0]
    return dataclasses.replace(settings, public_url=bridge_url(f"{host}:{http_port}"))


def serve(settings: Settings) -> int:
    # grpc and the bridge are imported only for the commands that need them
    from auth_server.api.server import create_server
    from auth_server.http.runner import BridgeServer, bind, local_target, with_bridge_secret

    logs.configure(settings.log_level)
    settings = with_bridge_secret(settings)  # the bridge proves itself to the guard with it
    # The HTTP port first: a busy one fails start-up before the gRPC server (and its logging) starts.
    listener = bind(settings.http_addr)
    try:
        settings = _public_url_from(settings, listener.getsockname()[1])
        app = create_server(settings)
    except BaseException:
        listener.close()
        raise
    if settings.metrics_addr:
        app.metrics.serve(settings.metrics_addr)
    try:
        # In process: the bridge calls the guarded handlers directly (no loopback gRPC hop; issue 15).
        bridge = BridgeServer(settings, local_target(settings.grpc_addr, app.port), listener, app.local).start()
    except BaseException:
        listener.close()
        app.stop(0)
        raise
    warm_up_in_background()
    stop = StopRequest()  # before the ready lines: whoever reads them may signal at once
    host = settings.grpc_addr.rpartition(":")[0]
    print(serving_banner(settings, f"{host}:{app.port}", bridge.url), flush=True)
    stop.wait()
    print("auth-server: shutting down (finishing in-flight calls)", flush=True)
    bridge.stop()
    app.stop(settings.shutdown_grace)
    print("auth-server: stopped", flush=True)
    return 0


def bridge(settings: Settings, upstream: str | None) -> int:
    from auth_server.http.runner import BridgeServer, local_target

    logs.configure(settings.log_level)
    upstream = check_addr("--upstream", upstream) if upstream else local_target(settings.grpc_addr)
    server = BridgeServer(settings, upstream).start()
    stop = StopRequest()  # before the ready lines: whoever reads them may signal at once
    print(f"auth-server: HTTP bridge listening on {server.url} (upstream {upstream})", flush=True)
    stop.wait()
    print("auth-server: shutting down", flush=True)
    server.stop()
    print("auth-server: stopped", flush=True)
    return 0


def set_role(settings: Settings, username: str, role: str, tenant: str | None, force: bool = False) -> int:
    from auth_server.domain.admin import Admin
    from auth_server.domain.audit import Audit
    from auth_server.domain.errors import AuthError
    from auth_server.domain.validation import normalise_username
    from auth_server.store import open_store

    tenant = tenant or settings.default_tenant
    if tenant not in settings.tenants:
        raise ConfigError(f"--tenant: unknown tenant {tenant!r} (AUTH_TENANTS is {','.join(sorted(settings.tenants))})")
    missing = _missing_sqlite(settings)
    if missing is not None:
        print(missing, file=sys.stderr)
        return EXIT_CONFIG
    where = _store_location(settings)
    store = open_store(settings.store_uri)
    store.open()
    try:
        store.prepare_tenant(tenant)
        user = store.find_user(tenant, normalise_username(username))
        if user is None:
            print(f"auth-server: no user {username!r} in tenant {tenant!r} of {where}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        try:
            Admin(store, Audit(store)).change_role(tenant, user.id, role, force=force)
        except AuthError as error:
            hint = " (--force overrides)" if error.reason == "LAST_ADMIN" else ""
            print(f"auth-server: {error.reason}: {error.message}{hint}", file=sys.stderr)
            return EXIT_CONFIG
    finally:
        store.close()
    print(f"auth-server: {user.username} is now {role} in tenant {tenant} of {where}")
    return 0


def _missing_sqlite(settings: Settings) -> str | None:
    """The refusal line when the store is a SQLite file that does not exist (opening it would create an
    empty database, and a server elsewhere would never see what we write)."""
    from auth_server.infra.config import sqlite_path

    path = sqlite_path(settings.store_uri)
    if path is None or path.is_file():
        return None
    return (
        f"auth-server: no database at {path.resolve()}: run this where `auth-server serve` runs, "
        "or name the store with --store / AUTH_STORE"
    )


def _store_location(settings: Settings) -> str:
    from auth_server.infra.config import sqlite_path

    path = sqlite_path(settings.store_uri)
    return str(path.resolve()) if path is not None else redact_uri(settings.store_uri)


def _account_json(account: object, secret: str | None = None) -> dict[str, object]:
    from auth_server.domain.services import allowed_tenants, timestamp
    from auth_server.store.base import ServiceAccount

    assert isinstance(account, ServiceAccount)
    if secret is not None:
        return {"name": account.name, "client_id": account.id, "client_secret": secret}
    return {
        "name": account.name,
        "client_id": account.id,
        "tenants": sorted(allowed_tenants(account)),  # empty: every tenant
        "created_at": timestamp(account.created_at),
        "rotated_at": timestamp(account.rotated_at),
        "previous_secret_valid_until": timestamp(account.previous_valid_until),
    }


def service_command(settings: Settings, args: argparse.Namespace) -> int:
    """`auth-server service ...`: the secret is needed to hash new secrets as the server checks them."""
    from auth_server.domain.audit import Audit
    from auth_server.domain.errors import AuthError
    from auth_server.domain.services import ServiceAccounts
    from auth_server.infra.config import load_dev_secret
    from auth_server.infra.keys import KeyRing
    from auth_server.store import open_store

    refusal = _missing_sqlite(settings)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return EXIT_CONFIG
    where = _store_location(settings)
    secret = settings.jwt_secret or load_dev_secret(settings.dev_secret_file or "var/auth.db.jwt-secret")
    store = open_store(settings.store_uri)
    store.open()
    try:
        accounts = ServiceAccounts(store, KeyRing.from_secret(secret), Audit(store), settings.tenants)
        command = args.service_command
        try:
            if command == "create":
                account, client_secret = accounts.create(args.name, args.tenants.split(","))
                scope = account.tenants or "all tenants"
                _print_secret(args.json, account, client_secret, f"created service account {account.name} ({scope})")
            elif command == "rotate":
                account, client_secret = accounts.rotate(args.name, args.overlap)
                until = _account_json(account)["previous_secret_valid_until"]
                note = f"rotated the secret of {account.name}; the old one works until {until}"
                _print_secret(args.json, account, client_secret, note)
            elif command == "delete":
                account = accounts.delete(args.name)
                print(f"auth-server: deleted service account {account.name} ({account.id}) from {where}")
            else:
                found = accounts.list()
                if args.json:
                    print(json.dumps([_account_json(a) for a in found], indent=2))
                elif not found:
                    print(f"auth-server: no service accounts in {where}")
                else:
                    rows = [["NAME", "CLIENT ID", "TENANTS", "CREATED", "OLD SECRET VALID UNTIL"]]
                    for a in found:
                        item = _account_json(a)
                        tenants = ",".join(item["tenants"]) or "*"  # type: ignore[arg-type]
                        rows.append(
                            [
                                a.name,
                                a.id,
                                tenants,
                                str(item["created_at"]),
                                str(item["previous_secret_valid_until"]) or "-",
                            ]
                        )
                    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
                    for row in rows:
                        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        except AuthError as error:
            detail = "; ".join(v.description for v in error.violations) or error.message
            print(f"auth-server: {error.reason}: {detail}", file=sys.stderr)
            return EXIT_UNAVAILABLE if error.reason == "SERVICE_ACCOUNT_NOT_FOUND" else EXIT_CONFIG
    finally:
        store.close()
    return 0


def purge_command(settings: Settings, as_json: bool) -> int:
    """`auth-server purge`: what the servers' periodic job does, once, now (e.g. from cron when
    AUTH_PURGE_INTERVAL=0); safe while servers run theirs."""
    from auth_server.domain.purge import KINDS, Purge
    from auth_server.store import open_store

    refusal = _missing_sqlite(settings)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return EXIT_CONFIG
    where = _store_location(settings)
    store = open_store(settings.store_uri)
    store.open()
    try:
        for tenant in sorted(settings.tenants):
            store.prepare_tenant(tenant)
        deleted = Purge(store, settings).run()
    finally:
        store.close()
    if as_json:
        print(json.dumps(deleted, sort_keys=True))
        return 0
    for tenant, counts in deleted.items():
        summary = ", ".join(f"{counts.get(kind, 0)} {kind.replace('_', ' ')}" for kind in KINDS)
        print(f"auth-server: purged tenant {tenant} of {where}: {summary}")
    return 0


def _print_secret(as_json: bool, account: object, client_secret: str, note: str) -> None:
    if as_json:
        print(json.dumps(_account_json(account, client_secret)))
        return
    item = _account_json(account, client_secret)
    print(f"auth-server: {note}")
    print(f"client_id:     {item['client_id']}")
    print(f"client_secret: {item['client_secret']}")
    print("The secret is shown only now: keep it in your secret store.")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "user":
            settings = load_settings(store=args.store)
            return set_role(settings, args.username, args.role, args.tenant, args.force)
        if args.command == "service":
            return service_command(load_settings(store=args.store), args)
        if args.command == "purge":
            return purge_command(load_settings(store=args.store), args.json)
        if args.command == "bridge":
            return bridge(load_settings(http_addr=args.http_addr), args.upstream)
        settings = load_settings(
            grpc_addr=getattr(args, "grpc_addr", None),
            http_addr=getattr(args, "http_addr", None),
            store=getattr(args, "store", None),
        )
        workers = getattr(args, "workers", 1)
        if workers > 1:
            from auth_server.runtime.workers import serve_workers

            return serve_workers(settings, workers)
        return serve(settings)
    except ConfigError as error:
        print(f"auth-server: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreUnavailable as error:
        print(f"auth-server: store unavailable: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except OSError as error:
        print(f"auth-server: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
