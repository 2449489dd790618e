"""Settings: one frozen, typed object loaded once from the environment (and CLI flags) and passed down.

Every key is documented beside its environment variable. `load_settings` validates everything up
front and raises ConfigError with a one-line message naming the variable, so a bad deployment fails
at start-up, never on the first call.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from auth_server.infra.private_files import FILE_MODE, make_private_dir, restrict

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MIN_SECRET_BYTES = 32
DEFAULT_STORE = "sqlite:///var/auth.db"
JWT_ALGORITHMS = ("HS256", "ES256", "EdDSA")
MAX_SESSION_LIFETIME = 100 * 365 * 86400  # "no practical limit", still far from datetime's range


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line naming the variable."""


@dataclass(frozen=True)
class Settings:
    grpc_addr: str = "127.0.0.1:50051"  # AUTH_GRPC_ADDR
    http_addr: str = "127.0.0.1:8080"  # AUTH_HTTP_ADDR
    store_uri: str = DEFAULT_STORE  # AUTH_STORE: sqlite:///path or mongodb://...
    jwt_secret: bytes = b""  # AUTH_JWT_SECRET (>= 32 bytes); SQLite dev default: generated file
    smtp_url: str | None = None  # AUTH_SMTP_URL: smtp://, smtp+starttls://, smtps://; unset: console
    mail_from: str = "auth@localhost"  # AUTH_MAIL_FROM
    public_url: str = "http://127.0.0.1:8080"  # AUTH_PUBLIC_URL: base of links in e-mails; default: the bridge's
    default_tenant: str = "default"  # AUTH_DEFAULT_TENANT
    tenants: frozenset[str] = frozenset({"default"})  # AUTH_TENANTS
    bcrypt_rounds: int = 12  # AUTH_BCRYPT_ROUNDS
    access_ttl: int = 900  # AUTH_ACCESS_TTL seconds
    refresh_ttl: int = 7 * 86400  # AUTH_REFRESH_TTL seconds
    # AUTH_SESSION_MAX_LIFETIME seconds from login after which a session ends however often it was
    # refreshed (a stolen refresh token kept in use cannot live for ever); may be below the refresh TTL.
    session_max_lifetime: int = 30 * 86400
    otp_ttl: int = 300  # AUTH_OTP_TTL seconds
    otp_max_attempts: int = 5  # AUTH_OTP_MAX_ATTEMPTS per challenge
    otp_resend_interval: int = 30  # AUTH_OTP_RESEND_INTERVAL seconds; 0 disables
    lockout_threshold: int = 5  # AUTH_LOCKOUT_THRESHOLD consecutive failed logins
    lockout_duration: int = 900  # AUTH_LOCKOUT_DURATION seconds of the first lockout; doubles each time
    unlock_ttl: int = 86400  # AUTH_UNLOCK_TTL seconds an e-mailed unlock token lives
    source_login_rate: int = 30  # AUTH_SOURCE_LOGIN_RATE password checks per minute per source IP; 0: off
    account_failure_limit: int = 20  # AUTH_ACCOUNT_FAILURE_LIMIT failed passwords+codes per window per account
    failure_window: int = 3600  # AUTH_FAILURE_WINDOW seconds of the account failure budget
    device_token_ttl: int = 365 * 86400  # AUTH_DEVICE_TOKEN_TTL seconds a known-device token lives
    bridge_secret: str = ""  # AUTH_BRIDGE_SECRET: a bridge sending it is a trusted proxy; serve makes one
    refresh_grace: int = 0  # AUTH_REFRESH_GRACE seconds; 0: strict rotation
    activity_interval: int = 60  # AUTH_ACTIVITY_INTERVAL: least seconds between last-activity writes
    # AUTH_SESSION_CACHE_TTL: seconds a process serves a session it read from its cache (revocations drop
    # it at once, domain/session_cache.py); 0: every call reads the store
    session_cache_ttl: int = 10
    trusted_proxies: tuple[str, ...] = ()  # AUTH_TRUSTED_PROXIES: IPs/CIDRs allowed to set x-forwarded-for
    cors_origins: tuple[str, ...] = ()  # AUTH_CORS_ORIGINS: browser origins the HTTP bridge allows; none by default
    refresh_cookie: bool = True  # AUTH_REFRESH_COOKIE: on: the bridge keeps refresh tokens in an HttpOnly cookie
    grpc_threads: int = 32  # AUTH_GRPC_THREADS: worker threads of the gRPC server
    # AUTH_WATCH_STREAMS: open WatchRevocations streams per process (each holds a worker thread);
    # 0: a quarter of AUTH_GRPC_THREADS
    watch_streams: int = 0
    hash_concurrency: int = field(default_factory=lambda: os.cpu_count() or 2)  # AUTH_HASH_CONCURRENCY
    max_message_bytes: int = 64 * 1024  # AUTH_MAX_MESSAGE_BYTES: largest request accepted
    shutdown_grace: float = 10.0  # AUTH_SHUTDOWN_GRACE seconds for in-flight calls on SIGTERM
    log_level: str = "INFO"  # AUTH_LOG_LEVEL
    metrics_addr: str = ""  # AUTH_METRICS_ADDR: HOST:PORT of the Prometheus /metrics endpoint; empty: off
    dev_secret_file: str | None = None  # where a generated dev secret lives (None: given by env)
    jwt_algorithm: str = "HS256"  # AUTH_JWT_ALGORITHM: HS256 (key from the secret), ES256 or EdDSA
    jwt_private_key_file: str | None = None  # AUTH_JWT_PRIVATE_KEY_FILE: PEM key for ES256/EdDSA
    jwt_key_id: str | None = None  # AUTH_JWT_KEY_ID: `kid` header of asymmetric tokens
    # AUTH_INTROSPECT_ACCESS: "service": Introspect needs a service token (its rule in auth.proto);
    # "public": anyone may call it (the behaviour before service accounts, for a migration)
    introspect_access: str = "service"
    # Account lifecycle (issue 14)
    reset_ttl: int = 900  # AUTH_RESET_TTL seconds a password-reset code lives
    signup_ttl: int = 900  # AUTH_SIGNUP_TTL seconds a sign-up code (and the username it holds) lives
    email_change_ttl: int = 900  # AUTH_EMAIL_CHANGE_TTL seconds a code sent to a new address lives
    report_ttl: int = 7 * 86400  # AUTH_REPORT_TTL seconds a "This wasn't me" link works
    new_device_mail: bool = True  # AUTH_NEW_DEVICE_MAIL: on: mail a notice of a sign-in from a new device
    default_phone_region: str = "US"  # AUTH_DEFAULT_PHONE_REGION: region of phone numbers without a country code
    max_sessions_per_user: int = 100  # AUTH_MAX_SESSIONS_PER_USER: a new session beyond it ends the idlest; 0: no cap
    audit_retention: int = 90 * 86400  # AUTH_AUDIT_RETENTION seconds audit events are kept
    purge_interval: int = 600  # AUTH_PURGE_INTERVAL seconds between purges of expired records; 0: never


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: int() also reads "٣٠٠", "3_00" and "³" (the last one raising), which no
    # operator means to write.
    if not re.fullmatch(r"\s*-?[0-9]+\s*", raw, flags=re.ASCII):
        raise ConfigError(f"{name}: expected an integer, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise ConfigError(f"{name}: must be between {low} and {high}, got {value}")
    return value


def _bridge_secret(env: Mapping[str, str]) -> str:
    value = env.get("AUTH_BRIDGE_SECRET", "")
    if value and (len(value) < MIN_SECRET_BYTES or not value.isascii() or not value.isprintable()):
        raise ConfigError(f"AUTH_BRIDGE_SECRET: must be at least {MIN_SECRET_BYTES} printable ASCII characters")
    return value


def check_addr(name: str, value: str) -> str:
    """Accept host:port, [v6]:port; reject anything else with a clear message."""
    host, sep, port = value.rpartition(":")
    # isascii(): str.isdigit() is true for "²", on which int() raises (a traceback, not this message).
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name}: expected HOST:PORT, got {value!r}")
    if host.startswith("[") != host.endswith("]"):
        raise ConfigError(f"{name}: malformed IPv6 address in {value!r}")
    return value


def check_store_uri(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme == "sqlite":
        if not value.startswith("sqlite:///") or len(value) <= len("sqlite:///"):
            raise ConfigError(
                f"AUTH_STORE: expected sqlite:///relative/path or sqlite:////absolute/path, got {value!r}"
            )
    elif parts.scheme in ("mongodb", "mongodb+srv"):
        if not parts.netloc:
            raise ConfigError(f"AUTH_STORE: MongoDB URI has no host: {value!r}")
    else:
        raise ConfigError(f"AUTH_STORE: unknown scheme {parts.scheme!r} (use sqlite:/// or mongodb://)")
    return value


def bridge_url(http_addr: str) -> str:
    """The bridge's base URL on this machine, the default AUTH_PUBLIC_URL: unlock links in e-mails must
    reach the bridge where it listens (a wildcard address is reached on loopback)."""
    host, _, port = http_addr.rpartition(":")
    if host in ("", "0.0.0.0"):  # noqa: S104 (recognising a wildcard, not binding)
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"http://{host}:{port}"


def redact_uri(uri: str) -> str:
    """The URI without its credentials, for logs and start-up lines."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return parts._replace(netloc=f"***@{parts.netloc.rpartition('@')[2]}").geturl()


def sqlite_path(store_uri: str) -> Path | None:
    return Path(store_uri[len("sqlite:///") :]) if store_uri.startswith("sqlite:///") else None


def check_smtp_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("smtp", "smtp+starttls", "smtps"):
        raise ConfigError(f"AUTH_SMTP_URL: unknown scheme {parts.scheme!r} (use smtp, smtp+starttls or smtps)")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"AUTH_SMTP_URL: bad port in {value!r}") from None
    if not parts.hostname or (port is not None and port <= 0):
        raise ConfigError(f"AUTH_SMTP_URL: expected smtp://host:port, got {value!r}")
    return value


def check_origin(value: str) -> str:
    """An exact browser origin, scheme://host[:port], normalised to lower case as browsers send it."""
    if value in ("*", "null"):
        raise ConfigError(f"AUTH_CORS_ORIGINS: {value!r} is not allowed (cookies are sent); list exact origins")
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"AUTH_CORS_ORIGINS: bad port in {value!r}") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
        or value.endswith(("?", "#"))
    ):
        raise ConfigError(f"AUTH_CORS_ORIGINS: expected an origin like https://app.example.com[:port], got {value!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default_port = {"http": 80, "https": 443}[parts.scheme]  # browsers leave the default port out of Origin
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "true", "yes", "1"):
        return True
    if raw in ("off", "false", "no", "0"):
        return False
    raise ConfigError(f"{name}: expected on or off, got {raw!r}")


def check_tenant(name: str, value: str) -> str:
    if not TENANT_PATTERN.match(value):
        raise ConfigError(f"{name}: tenant id {value!r} does not match {TENANT_PATTERN.pattern}")
    return value


def _jwt_secret(env: Mapping[str, str], store_uri: str) -> tuple[bytes, str | None]:
    raw = env.get("AUTH_JWT_SECRET", "")
    if raw:
        secret = raw.encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"AUTH_JWT_SECRET: must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}")
        return secret, None
    db = sqlite_path(store_uri)
    if db is None:
        raise ConfigError("AUTH_JWT_SECRET: required with a MongoDB store (only the SQLite dev default generates one)")
    # Dev mode: keep a generated secret beside the SQLite file so tokens survive restarts.
    secret_file = db.with_name(db.name + ".jwt-secret")
    return b"", str(secret_file)


def load_dev_secret(path: str) -> bytes:
    """Read (or create, mode 0600 whatever the umask, in a directory made 0700) the generated development
    secret; one an older version left readable to others is tightened."""
    file = Path(path)
    if not file.exists():
        make_private_dir(file.parent)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # os.open's mode is filtered by the umask
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    else:
        restrict(file)
    secret = file.read_text().strip().encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{path}: generated secret is shorter than {MIN_SECRET_BYTES} bytes; delete it")
    return secret


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build Settings from the environment; `overrides` (from CLI flags) win over it."""
    env = dict(os.environ if env is None else env)
    for key, value in overrides.items():
        if value is not None:
            env["AUTH_" + key.upper()] = str(value)

    store_uri = check_store_uri(env.get("AUTH_STORE") or DEFAULT_STORE)
    default_tenant = check_tenant("AUTH_DEFAULT_TENANT", env.get("AUTH_DEFAULT_TENANT") or "default")
    tenant_list = [t.strip() for t in (env.get("AUTH_TENANTS") or default_tenant).split(",") if t.strip()]
    tenants = frozenset(check_tenant("AUTH_TENANTS", t) for t in tenant_list)
    if default_tenant not in tenants:
        raise ConfigError(f"AUTH_TENANTS: must include the default tenant {default_tenant!r}")
    proxies = tuple(p.strip() for p in (env.get("AUTH_TRUSTED_PROXIES") or "").split(",") if p.strip())
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"AUTH_TRUSTED_PROXIES: {proxy!r} is not an IP address or CIDR") from None
    origins = tuple(
        dict.fromkeys(check_origin(o.strip()) for o in (env.get("AUTH_CORS_ORIGINS") or "").split(",") if o.strip())
    )
    smtp_url = env.get("AUTH_SMTP_URL") or None
    level = (env.get("AUTH_LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"AUTH_LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {level!r}")
    try:
        grace = float(env.get("AUTH_SHUTDOWN_GRACE") or 10)
    except ValueError:
        raise ConfigError("AUTH_SHUTDOWN_GRACE: expected a number of seconds") from None
    secret, secret_file = _jwt_secret(env, store_uri)
    algorithm = env.get("AUTH_JWT_ALGORITHM") or "HS256"
    if algorithm not in JWT_ALGORITHMS:
        raise ConfigError(f"AUTH_JWT_ALGORITHM: expected one of {', '.join(JWT_ALGORITHMS)}, got {algorithm!r}")
    key_file = env.get("AUTH_JWT_PRIVATE_KEY_FILE") or None
    if (algorithm != "HS256") != bool(key_file):
        raise ConfigError("AUTH_JWT_PRIVATE_KEY_FILE: required with ES256/EdDSA, and only with them")
    if key_file and not Path(key_file).is_file():
        raise ConfigError(f"AUTH_JWT_PRIVATE_KEY_FILE: no such file {key_file!r}")
    http_addr = check_addr("AUTH_HTTP_ADDR", env.get("AUTH_HTTP_ADDR") or "127.0.0.1:8080")
    introspect_access = (env.get("AUTH_INTROSPECT_ACCESS") or "service").strip().lower()
    if introspect_access not in ("service", "public"):
        raise ConfigError(f"AUTH_INTROSPECT_ACCESS: expected service or public, got {introspect_access!r}")
    region = (env.get("AUTH_DEFAULT_PHONE_REGION") or "US").strip().upper()
    if not (len(region) == 2 and region.isascii() and region.isalpha()):
        raise ConfigError(f"AUTH_DEFAULT_PHONE_REGION: expected a two-letter region code such as US, got {region!r}")
    return Settings(
        reset_ttl=_int(env, "AUTH_RESET_TTL", 900, 60, 86400),
        signup_ttl=_int(env, "AUTH_SIGNUP_TTL", 900, 60, 86400),
        email_change_ttl=_int(env, "AUTH_EMAIL_CHANGE_TTL", 900, 60, 86400),
        report_ttl=_int(env, "AUTH_REPORT_TTL", 7 * 86400, 60, 30 * 86400),
        new_device_mail=_bool(env, "AUTH_NEW_DEVICE_MAIL", True),
        default_phone_region=region,
        max_sessions_per_user=_int(env, "AUTH_MAX_SESSIONS_PER_USER", 100, 0, 1_000_000),
        audit_retention=_int(env, "AUTH_AUDIT_RETENTION", 90 * 86400, 3600, 100 * 365 * 86400),
        purge_interval=_int(env, "AUTH_PURGE_INTERVAL", 600, 0, 7 * 86400),
        introspect_access=introspect_access,
        jwt_algorithm=algorithm,
        jwt_private_key_file=key_file,
        jwt_key_id=env.get("AUTH_JWT_KEY_ID") or None,
        grpc_addr=check_addr("AUTH_GRPC_ADDR", env.get("AUTH_GRPC_ADDR") or "127.0.0.1:50051"),
        http_addr=http_addr,
        store_uri=store_uri,
        jwt_secret=secret,
        dev_secret_file=secret_file,
        smtp_url=check_smtp_url(smtp_url) if smtp_url else None,
        mail_from=env.get("AUTH_MAIL_FROM") or "auth@localhost",
        public_url=(env.get("AUTH_PUBLIC_URL") or bridge_url(http_addr)).rstrip("/"),
        default_tenant=default_tenant,
        tenants=tenants,
        bcrypt_rounds=_int(env, "AUTH_BCRYPT_ROUNDS", 12, 4, 31),
        access_ttl=_int(env, "AUTH_ACCESS_TTL", 900, 10, 86400),
        refresh_ttl=_int(env, "AUTH_REFRESH_TTL", 7 * 86400, 60, 365 * 86400),
        session_max_lifetime=_int(env, "AUTH_SESSION_MAX_LIFETIME", 30 * 86400, 60, MAX_SESSION_LIFETIME),
        otp_ttl=_int(env, "AUTH_OTP_TTL", 300, 10, 3600),
        otp_max_attempts=_int(env, "AUTH_OTP_MAX_ATTEMPTS", 5, 1, 100),
        otp_resend_interval=_int(env, "AUTH_OTP_RESEND_INTERVAL", 30, 0, 3600),
        lockout_threshold=_int(env, "AUTH_LOCKOUT_THRESHOLD", 5, 1, 1000),
        lockout_duration=_int(env, "AUTH_LOCKOUT_DURATION", 900, 1, 86400),
        unlock_ttl=_int(env, "AUTH_UNLOCK_TTL", 86400, 60, 30 * 86400),
        source_login_rate=_int(env, "AUTH_SOURCE_LOGIN_RATE", 30, 0, 1_000_000),
        bridge_secret=_bridge_secret(env),
        account_failure_limit=_int(env, "AUTH_ACCOUNT_FAILURE_LIMIT", 20, 1, 1_000_000),
        failure_window=_int(env, "AUTH_FAILURE_WINDOW", 3600, 10, 30 * 86400),
        device_token_ttl=_int(env, "AUTH_DEVICE_TOKEN_TTL", 365 * 86400, 60, 5 * 365 * 86400),
        refresh_grace=_int(env, "AUTH_REFRESH_GRACE", 0, 0, 3600),
        activity_interval=_int(env, "AUTH_ACTIVITY_INTERVAL", 60, 0, 86400),
        session_cache_ttl=_int(env, "AUTH_SESSION_CACHE_TTL", 10, 0, 300),
        trusted_proxies=proxies,
        cors_origins=origins,
        refresh_cookie=_bool(env, "AUTH_REFRESH_COOKIE", True),
        grpc_threads=_int(env, "AUTH_GRPC_THREADS", 32, 2, 1024),
        watch_streams=_int(env, "AUTH_WATCH_STREAMS", 0, 0, 1024),
        hash_concurrency=_int(env, "AUTH_HASH_CONCURRENCY", os.cpu_count() or 2, 1, 256),
        max_message_bytes=_int(env, "AUTH_MAX_MESSAGE_BYTES", 64 * 1024, 1024, 16 * 1024 * 1024),
        shutdown_grace=grace,
        log_level=level,
        metrics_addr=check_addr("AUTH_METRICS_ADDR", env["AUTH_METRICS_ADDR"]) if env.get("AUTH_METRICS_ADDR") else "",
    )
