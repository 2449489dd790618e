"""Builds the gRPC server: the guard, both auth.v1 servicers, health and reflection.

The server model is grpcio's sync server on a thread pool (chosen by measurement: docs/performance.md).
Blocking work (bcrypt, SMTP, store I/O) runs on the handler's pool thread, never on an event loop;
bcrypt is bounded (passwords.py) so a login storm leaves threads for cheap calls.
`create_server` is separate from `serve` so tests build the very same server on port 0.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from auth_client.gen.auth.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_server.api.guard import Guard, Rule, load_rules
from auth_server.api.local import LocalCalls
from auth_server.api.servicers.admin import AdminServicer
from auth_server.api.servicers.auth import AccountFlows, AuthServicer
from auth_server.domain.accounts import Accounts
from auth_server.domain.admin import Admin
from auth_server.domain.audit import Audit
from auth_server.domain.parts import Parts
from auth_server.domain.passwords import PasswordHasher
from auth_server.domain.profile import Profiles
from auth_server.domain.purge import Purge, PurgeJob
from auth_server.domain.recovery import Recovery
from auth_server.domain.revocations import RevocationFeed
from auth_server.domain.services import ServiceAccounts
from auth_server.domain.session_cache import SessionCache
from auth_server.domain.sessions import Sessions
from auth_server.domain.signups import Signups
from auth_server.domain.throttle import Throttle
from auth_server.domain.tokens import RefreshTokens, access_tokens_for
from auth_server.infra.config import ConfigError, Settings, load_dev_secret
from auth_server.infra.keys import KeyRing
from auth_server.infra.mail import ConsoleMailer, Mailer, SmtpMailer
from auth_server.infra.metrics import Metrics
from auth_server.store import open_store
from auth_server.store.base import Store, StoreUnavailable

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)
MAX_METADATA_BYTES = 16 * 1024
HEALTH_INTERVAL_SECONDS = 2.0
INTROSPECT = "/auth.v1.AuthService/Introspect"


class HealthMonitor:
    """Keeps grpc.health.v1 in step with the store: SERVING only while the store answers a ping."""

    def __init__(self, store: Store, servicer: health.HealthServicer, interval: float) -> None:
        self._store = store
        self._servicer = servicer
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-monitor", daemon=True)
        self._serving: bool | None = None

    def check_now(self) -> bool:
        try:
            self._store.ping()
            serving = True
        except StoreUnavailable:
            serving = False
        if serving != self._serving:
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", *SERVICE_NAMES):
                self._servicer.set(name, status)
            (log.info if serving else log.error)(
                "store %s", "reachable: SERVING" if serving else "unreachable: NOT_SERVING"
            )
            self._serving = serving
        return serving

    def start(self) -> None:
        self.check_now()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check_now()

    def stop(self) -> None:
        self._stop.set()


@dataclass
class App:
    """A built server and what must be shut down with it."""

    server: grpc.Server
    port: int
    settings: Settings
    store: Store
    metrics: Metrics
    health: health.HealthServicer
    monitor: HealthMonitor
    revocations: RevocationFeed | None = None
    local: LocalCalls | None = None  # the guarded handlers for `serve`'s in-process bridge
    purge: PurgeJob | None = None  # AUTH_PURGE_INTERVAL's job (None: 0, never)
    cache: SessionCache | None = None  # AUTH_SESSION_CACHE_TTL's cache and its tail (None: 0, off)

    def stop(self, grace: float) -> None:
        self.monitor.stop()
        if self.purge is not None:
            self.purge.stop()  # before the store closes under it
        self.health.enter_graceful_shutdown()
        if self.revocations is not None:
            self.revocations.close()  # open WatchRevocations streams end now (UNAVAILABLE), not after grace
        self.server.stop(grace).wait()
        if self.cache is not None:
            self.cache.close()  # its tail reads the store: before the store closes
        self.store.close()


def build_mailer(settings: Settings) -> Mailer:
    return SmtpMailer(settings.smtp_url, settings.mail_from) if settings.smtp_url else ConsoleMailer()


def check_can_listen(addr: str, reuse_port: bool) -> None:
    """ConfigError naming AUTH_GRPC_ADDR when `addr` cannot be listened on (a port in use, an address not
    on this machine), checked before grpc tries: grpc would print a C-core error line and raise a
    RuntimeError that names neither the cause nor the variable. Port 0 always works."""
    host, _, port = addr.rpartition(":")
    if int(port) == 0:
        return

    def refuse(error: OSError) -> ConfigError:
        return ConfigError(f"AUTH_GRPC_ADDR: gRPC server cannot listen on {addr}: {error.strerror or error}")

    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as error:
        raise refuse(error) from None
    failures: list[OSError] = []
    for family, kind, proto, _, sockaddr in found:
        with socket.socket(family, kind, proto) as probe:
            # As grpc binds: SO_REUSEADDR (a port left in TIME_WAIT is free), SO_REUSEPORT for --workers.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise refuse(error) from None
                failures.append(error)
    # grpc listens when at least one of the resolved addresses works ("localhost" without IPv6 is fine).
    if failures and len(failures) == len(found):
        raise refuse(failures[0])


def create_server(
    settings: Settings,
    *,
    store: Store | None = None,
    mailer: Mailer | None = None,
    health_interval: float = HEALTH_INTERVAL_SECONDS,
    reuse_port: bool = False,
) -> App:
    """Open the store (StoreUnavailable if it cannot be reached), build and start the server.

    `reuse_port` lets several worker processes listen on one port (SO_REUSEPORT; auth_server/runtime/workers.py).
    """
    check_can_listen(settings.grpc_addr, reuse_port)  # before the store opens: nothing to undo
    secret = settings.jwt_secret or load_dev_secret(settings.dev_secret_file or "var/auth.db.jwt-secret")
    keys = KeyRing.from_secret(secret)
    store = store or open_store(settings.store_uri)
    store.open()
    for tenant in sorted(settings.tenants):
        store.prepare_tenant(tenant)

    hasher = PasswordHasher(
        settings.bcrypt_rounds, settings.hash_concurrency, max_waiting=max(1, settings.grpc_threads // 2)
    )
    hasher.warm_up()
    key_file = settings.jwt_private_key_file
    access_tokens = access_tokens_for(
        settings.jwt_algorithm,
        keys.jwt,
        Path(key_file).read_bytes() if key_file else None,
        settings.jwt_key_id,
        settings.access_ttl,
    )
    metrics = Metrics()
    audit = Audit(store, metrics.count_event)
    cache = None
    if settings.session_cache_ttl:
        cache = SessionCache(
            store, settings.tenants, settings.session_cache_ttl, on_read=metrics.count_session_cache_read
        )
        metrics.watch_session_cache(cache.entry_count, cache.tail_age)
    sessions = Sessions(store, settings, keys, access_tokens, RefreshTokens(keys.refresh), audit, cache)
    throttle = Throttle(store, settings, keys)
    mailer = mailer or build_mailer(settings)
    parts = Parts(store, settings, keys, hasher, mailer, sessions, audit, throttle)
    accounts = Accounts(parts)
    flows = AccountFlows(signups=Signups(parts), recovery=Recovery(parts, accounts), profiles=Profiles(parts, accounts))
    services = ServiceAccounts(store, keys, audit, settings.tenants, access_tokens=access_tokens, throttle=throttle)
    rules = load_rules([auth_pb2.DESCRIPTOR, admin_pb2.DESCRIPTOR])
    if settings.introspect_access == "public":  # AUTH_INTROSPECT_ACCESS=public: the pre-service-account rule
        rules[INTROSPECT] = Rule(public=True, roles=None)

    # One handler pool for both transports: the in-process bridge (LocalCalls) runs its calls here too.
    handler_pool = futures.ThreadPoolExecutor(max_workers=settings.grpc_threads, thread_name_prefix="grpc")
    guard = Guard(rules, sessions, settings, metrics, services)
    server = grpc.server(
        handler_pool,
        interceptors=[guard],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    revocations = RevocationFeed(store, max_streams=settings.watch_streams or max(1, settings.grpc_threads // 4))
    auth_servicer = AuthServicer(accounts, sessions, services, revocations, flows)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(auth_servicer, server)
    admin_servicer = AdminServicer(Admin(store, audit, sessions.revocations))
    admin_pb2_grpc.add_AdminServiceServicer_to_server(admin_servicer, server)
    health_servicer = health.HealthServicer()
    servicers = ((auth_pb2.DESCRIPTOR, auth_servicer), (admin_pb2.DESCRIPTOR, admin_servicer))
    local = LocalCalls(guard, servicers, health_servicer, handler_pool)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    try:
        port = server.add_insecure_port(settings.grpc_addr)
    except RuntimeError:  # taken between the check above and now
        port = 0
    if port == 0:
        store.close()
        raise ConfigError(f"AUTH_GRPC_ADDR: gRPC server cannot listen on {settings.grpc_addr}")
    if cache is not None:
        cache.start()
    monitor = HealthMonitor(store, health_servicer, health_interval)
    monitor.start()
    server.start()
    # Every replica purges (domain/purge.py: safe when several do it at once), so nothing to elect.
    purge = PurgeJob(Purge(store, settings), settings.purge_interval).start() if settings.purge_interval else None
    return App(
        server=server,
        port=port,
        settings=settings,
        store=store,
        metrics=metrics,
        health=health_servicer,
        monitor=monitor,
        revocations=revocations,
        local=local,
        purge=purge,
        cache=cache,
    )
