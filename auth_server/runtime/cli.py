"""The `auth-server` command: serve (default), bridge, and `user set-role` for bootstrapping an admin.

`serve` runs the gRPC server and the HTTP bridge (auth_server/http) in one process; `bridge` runs
the bridge alone in front of a gRPC server elsewhere. SIGTERM/SIGINT stop both cleanly (exit 0).

Configuration errors and an unreachable store end the process with a one-line message and exit code
2 or 1, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from auth_server.infra.config import ConfigError, Settings, check_addr, load_settings, redact_uri
from auth_server.runtime import logs
from auth_server.store.base import StoreUnavailable

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 1


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
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
    return parser


def _wait_for_signal() -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()


def serve(settings: Settings) -> int:
    # grpc and the bridge are imported only for the commands that need them
    from auth_server.api.server import create_server
    from auth_server.http.runner import BridgeServer, local_target, trust_local_bridge

    logs.configure(settings.log_level)
    app = create_server(trust_local_bridge(settings))
    host = settings.grpc_addr.rpartition(":")[0]
    print(f"auth-server: gRPC listening on {host}:{app.port} (store: {redact_uri(settings.store_uri)})", flush=True)
    if settings.metrics_addr:
        app.metrics.serve(settings.metrics_addr)
        print(f"auth-server: metrics on http://{settings.metrics_addr}/metrics", flush=True)
    try:
        bridge = BridgeServer(settings, local_target(settings.grpc_addr, app.port)).start()
    except BaseException:
        app.stop(0)
        raise
    print(f"auth-server: HTTP bridge listening on {bridge.url}", flush=True)
    _wait_for_signal()
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
    print(f"auth-server: HTTP bridge listening on {server.url} (upstream {upstream})", flush=True)
    _wait_for_signal()
    print("auth-server: shutting down", flush=True)
    server.stop()
    print("auth-server: stopped", flush=True)
    return 0


def set_role(settings: Settings, username: str, role: str, tenant: str | None) -> int:
    from auth_server.domain.validation import normalise_username
    from auth_server.store import open_store

    tenant = tenant or settings.default_tenant
    if tenant not in settings.tenants:
        raise ConfigError(f"--tenant: unknown tenant {tenant!r} (AUTH_TENANTS is {','.join(sorted(settings.tenants))})")
    store = open_store(settings.store_uri)
    store.open()
    try:
        store.prepare_tenant(tenant)
        user = store.find_user(tenant, normalise_username(username))
        if user is None:
            print(f"auth-server: no user {username!r} in tenant {tenant!r}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        store.update_user(tenant, user.id, set={"role": role})
    finally:
        store.close()
    print(f"auth-server: {user.username} is now {role} in tenant {tenant}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "user":
            settings = load_settings(store=args.store)
            return set_role(settings, args.username, args.role, args.tenant)
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
