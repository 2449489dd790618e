"""The storage contract: records, the `Store` protocol every adapter implements, and store errors.

The domain talks to storage only through this protocol. Every state change that could race is a
single conditional update (`update_*` with `expect`), which the adapters implement as one atomic
statement (SQLite `UPDATE ... WHERE ... RETURNING`, MongoDB `find_one_and_update`), never as
read-modify-write. All state lives here, none in process memory, so replicas can share one store.

Times are timezone-aware UTC datetimes truncated to milliseconds (MongoDB's precision), so a value
read back compares equal to the value written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class StoreError(Exception):
    """Base of the errors a store raises."""


class StoreUnavailable(StoreError):
    """The backing database cannot be reached or did not answer; the operation did not happen."""


class DuplicateKey(StoreError):
    """A unique field already holds this value in the tenant; `field` names it ("username", "email",
    "phone", "id")."""

    def __init__(self, field: str) -> None:
        super().__init__(f"duplicate {field}")
        self.field = field


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str  # normalised (lower case); unique per tenant
    email: str  # normalised (lower case); unique per tenant
    name: str
    phone: str  # E.164 or ""; unique per tenant when set
    role: str  # "user" | "manager" | "admin"
    password_hash: bytes
    created_at: datetime
    admin_locked: bool = False  # set by an admin; only an admin lifts it
    locked_until: datetime | None = None  # lockout after failed logins; expires by itself
    failed_logins: int = 0  # consecutive failures since the last success or unlock
    lockouts: int = 0  # how many lockouts so far (the next one lasts longer)
    last_otp_sent_at: datetime | None = None  # for the resend interval
    unlock_token_hash: bytes | None = None  # keyed hash of the e-mailed unlock token
    unlock_token_expires_at: datetime | None = None
    password_changed_at: datetime | None = None
    email_verified: bool = False  # a code mailed to `email` was redeemed (sign-up, e-mail change)

    def is_locked(self, now: datetime) -> bool:
        return self.admin_locked or (self.locked_until is not None and self.locked_until > now)


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: str
    device_name: str
    ip_address: str
    user_agent: str
    created_at: datetime
    last_activity: datetime
    expires_at: datetime  # the refresh token's expiry; after it the session is dead
    refresh_nonce: bytes  # per-session input of the refresh-token MAC; not a token by itself
    refresh_generation: int = 0  # generation of the current refresh token
    refresh_hash: bytes = b""  # keyed hash of the current refresh token
    rotated_at: datetime | None = None  # when the current generation was issued by a rotation
    revoked_at: datetime | None = None
    revoke_reason: str = ""

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and self.expires_at > now


@dataclass(frozen=True, slots=True)
class LoginChallenge:
    """Something mailed that someone must redeem once before it expires: a login code, and, by `kind`,
    a pending sign-up, a password reset, an e-mail change or a "This wasn't me" link."""

    id: str  # the id handed to the caller (login_id, signup_id, reset_id, change_id)
    user_id: str  # "" for a pending sign-up (no user yet)
    otp_hash: bytes  # keyed hash of the 6-digit code (or of the mailed token)
    created_at: datetime
    expires_at: datetime
    attempts: int = 0  # redemption attempts made against it, right or wrong
    consumed_at: datetime | None = None  # set when redeemed or superseded by a newer one of its kind
    kind: str = "login"  # "login" | "signup" | "reset" | "email_change" | "signin_report"
    payload: str = ""  # a JSON object the kind needs (a pending sign-up's fields, the new e-mail); no secret


@dataclass(frozen=True, slots=True)
class Counter:
    """A named counter the domain throttles and coordinates with (domain/throttle.py owns the keys).

    The store only keeps it; every change is a compare-and-swap on `version`
    (`update_counter(..., expect={"version": v})`), so the domain's rules run atomically on every
    adapter and across replicas without the store knowing them.
    """

    id: str  # the key, e.g. "pair:<identifier digest>:<ip>"
    version: int  # incremented by every write
    count: int = 0
    window_start: datetime | None = None  # when the current counting window began
    blocked_until: datetime | None = None  # refused until then (a lock episode, a lease)
    level: int = 0  # escalation: how many lock episodes so far
    expires_at: datetime | None = None  # after it the counter means nothing and may be deleted
    owner: str = ""  # who holds it, for a lease or hold that names its holder (a pending sign-up's username)


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A platform-wide caller that is not a person (another service, a batch job).

    Kept outside the tenant databases: `tenants` restricts where it may call. Only keyed hashes of its
    secrets are stored; after a rotation the previous secret keeps working until `previous_valid_until`.
    """

    id: str  # the client id handed to the operator
    name: str  # unique across the platform; what access rules name
    tenants: str  # comma-separated tenant ids it may call in; "" = every tenant
    secret_hash: bytes  # keyed hash of the current secret
    created_at: datetime
    rotated_at: datetime | None = None  # when the current secret replaced the previous one
    previous_secret_hash: bytes | None = None  # the secret before the last rotation
    previous_valid_until: datetime | None = None  # the previous secret (and tokens it got) die then


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: str  # time-ordered, so newest-first paging is by id
    type: str  # "login.failed", "session.revoked", ...
    user_id: str  # whom it is about ("" when a login named no known user)
    actor_user_id: str  # who caused it, when someone else did (an admin)
    ip_address: str
    created_at: datetime
    details: str  # a JSON object of strings; never a secret


@dataclass(frozen=True, slots=True)
class Revocation:
    """One entry of a tenant's append-only revocation log: a change that can turn live tokens dead.

    `seq` is assigned by the store when the entry is appended and orders the log: an entry that becomes
    visible never has a smaller seq than one already visible, so a reader that resumes after the
    largest seq it has seen never skips one (see each adapter's append_revocation).
    """

    seq: int  # 0 until appended
    kind: str  # "session_revoked", "user_sessions_revoked", "password_changed", "user_locked", ...
    at: datetime
    session_id: str = ""
    user_id: str = ""
    service_account_id: str = ""


def replace(record: Any, **changes: Any) -> Any:
    """A copy of a record with some fields changed (dataclasses.replace, re-exported for adapters)."""
    return dataclasses.replace(record, **changes)


class Store(Protocol):
    """Per-tenant storage. Every method takes the tenant id first; tenants never see each other.

    `update_*` methods are conditional atomic updates: `set` assigns fields, `inc` adds to integer
    fields, and the update happens only if every field in `expect` currently equals the given value
    (None matches an unset field). They return the record as it is after the update, or None when
    the record does not exist or an expectation failed; with neither `set` nor `inc` they are a
    conditional read. A field name that is not the record's, the id, a field both set and
    incremented, or a value of the wrong kind (naive datetimes included) raises ValueError and
    changes nothing. Any failure to reach the database raises StoreUnavailable, as does any call
    after close() (open() may be called again).
    """

    def open(self) -> None:
        """Connect and fail fast (StoreUnavailable) when the database cannot be reached."""

    def close(self) -> None: ...

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers now (drives the health service)."""

    def prepare_tenant(self, tenant: str) -> None:
        """Create the tenant's tables/collections and indexes if missing. Idempotent."""

    # users
    def create_user(self, tenant: str, user: User) -> None:
        """Insert; DuplicateKey("username"|"email") when either is taken in the tenant ("id" if the id is)."""

    def get_user(self, tenant: str, user_id: str) -> User | None: ...

    def find_user(self, tenant: str, username_or_email: str) -> User | None:
        """The user whose normalised username, e-mail or (non-empty) phone equals the (already
        normalised) argument.

        Should one user's username equal another's e-mail or phone, the username match wins, then the e-mail.
        """

    def list_users(self, tenant: str, after_id: str | None, limit: int) -> list[User]:
        """Users ordered by id (ids sort by creation time), those with id > after_id, at most limit.

        A limit of 0 or less gives an empty list (MongoDB would read 0 as "no limit").
        """

    def count_users(self, tenant: str, role: str, *, unlocked_only: bool = False) -> int:
        """Users with this role; with `unlocked_only`, only those no admin has locked."""

    def update_user(
        self,
        tenant: str,
        user_id: str,
        *,
        set: dict[str, Any] | None = None,
        inc: dict[str, int] | None = None,
        expect: dict[str, Any] | None = None,
    ) -> User | None:
        """As every update_*; DuplicateKey("username"|"email"|"phone") when a unique field would collide."""

    # sessions
    def create_session(self, tenant: str, session: Session) -> None: ...

    def get_session(self, tenant: str, session_id: str) -> Session | None: ...

    def get_session_and_user(self, tenant: str, session_id: str) -> tuple[Session, User] | None:
        """The session and its user in as few round trips as the database allows (the guard's path).

        None when the session or its user does not exist.
        """

    def list_active_sessions(self, tenant: str, user_id: str, now: datetime) -> list[Session]:
        """Not revoked and not expired, newest last_activity first."""

    def update_session(
        self,
        tenant: str,
        session_id: str,
        *,
        set: dict[str, Any] | None = None,
        inc: dict[str, int] | None = None,
        expect: dict[str, Any] | None = None,
    ) -> Session | None: ...

    def revoke_sessions(
        self, tenant: str, user_id: str, now: datetime, reason: str, except_id: str | None = None
    ) -> int:
        """Set revoked_at on every unrevoked session of the user (but except_id); return how many."""

    # login challenges
    def create_challenge(self, tenant: str, challenge: LoginChallenge) -> None: ...

    def get_challenge(self, tenant: str, challenge_id: str) -> LoginChallenge | None: ...

    def update_challenge(
        self,
        tenant: str,
        challenge_id: str,
        *,
        set: dict[str, Any] | None = None,
        inc: dict[str, int] | None = None,
        expect: dict[str, Any] | None = None,
    ) -> LoginChallenge | None: ...

    def consume_challenges(self, tenant: str, user_id: str, now: datetime, kind: str = "login") -> int:
        """Mark every open challenge of this kind of the user consumed (a newer one supersedes them)."""

    # counters (throttles, leases): see Counter
    def create_counter(self, tenant: str, counter: Counter) -> None:
        """Insert; DuplicateKey("id") when a counter with that key exists."""

    def get_counter(self, tenant: str, counter_id: str) -> Counter | None: ...

    def update_counter(
        self,
        tenant: str,
        counter_id: str,
        *,
        set: dict[str, Any] | None = None,
        inc: dict[str, int] | None = None,
        expect: dict[str, Any] | None = None,
    ) -> Counter | None: ...

    def delete_counters(self, tenant: str, prefix: str) -> int:
        """Delete every counter whose key starts with `prefix` (not empty); return how many."""

    # audit trail (append-only)
    def record_event(self, tenant: str, event: AuditEvent) -> None: ...

    def list_events(
        self, tenant: str, before_id: str | None, limit: int, user_id: str | None = None
    ) -> list[AuditEvent]:
        """Newest first: events with id < before_id (all when None), only `user_id`'s when given."""

    # service accounts: platform-wide, no tenant argument (kept apart from every tenant's data)
    def create_service_account(self, account: ServiceAccount) -> None:
        """Insert; DuplicateKey("name") when the name is taken ("id" if the id is)."""

    def get_service_account(self, account_id: str) -> ServiceAccount | None: ...

    def find_service_account(self, name: str) -> ServiceAccount | None: ...

    def list_service_accounts(self) -> list[ServiceAccount]:
        """Every service account, ordered by name."""

    def update_service_account(
        self,
        account_id: str,
        *,
        set: dict[str, Any] | None = None,
        inc: dict[str, int] | None = None,
        expect: dict[str, Any] | None = None,
    ) -> ServiceAccount | None: ...

    def delete_service_account(self, account_id: str) -> bool:
        """Delete it; False when there was none."""

    # revocation log (append-only, per tenant): what WatchRevocations streams
    def append_revocation(self, tenant: str, revocation: Revocation) -> Revocation:
        """Append; return the entry with its seq, greater than that of every entry visible before it."""

    def list_revocations(self, tenant: str, after_seq: int, limit: int) -> list[Revocation]:
        """The tenant's entries with seq > after_seq, oldest first, at most limit."""

    def last_revocation_seq(self, tenant: str) -> int:
        """The largest seq in the tenant's log (0 when empty): where a watch "from now" starts."""

    # purge (domain/purge.py decides the cut-offs)
    def purge(
        self,
        tenant: str,
        *,
        ended_before: datetime,
        events_before: datetime,
        revocations_before: datetime | None = None,
    ) -> dict[str, int]:
        """Delete what ended before the cut-offs; return how many of each kind went.

        "sessions": revoked, or expired, before `ended_before`; "challenges" (every kind): expired or
        consumed before it; "counters": expired before it (none without an expiry); "unlock_tokens":
        users whose unlock token expired before it lose the token's hash and expiry (the user stays);
        "audit_events": created before `events_before`; "revocations": log entries appended before
        `revocations_before` (None: none), never the newest one, so seqs go on from it. Every delete is
        conditional on the record being past its cut-off, so purges running at once in several
        processes are safe: each record goes once, and nothing live is touched.
        """
