"""Device sessions: opening one, authenticating a call by its access token, refresh rotation with reuse
detection, listing and revoking. No gRPC and no database types here: only the Store protocol.

A call's token is checked against its session and user as the process's session cache holds them
(domain/session_cache.py: revocations empty it) or as one store read finds them; only an admission is
ever taken from the cache.

A session lives until its refresh token expires (AUTH_REFRESH_TTL, sliding on each rotation) and never
beyond AUTH_SESSION_MAX_LIFETIME after its login: then the calls and the refresh of its tokens answer
SESSION_EXPIRED, and its owner logs in again.

A user has at most AUTH_MAX_SESSIONS_PER_USER live sessions: opening one more ends the least recently
active one (audit event `session.evicted`, a session_revoked entry in the revocation log). Near the cap,
count, evict and create run under a per-user lease (a counter taken by compare-and-swap,
domain/counters.py), since neither store offers a transaction: parallel logins of one user take turns
and never exceed it. Further from it than LEASE_MARGIN sessions, a sign-in only counts (one read) and
creates: more than LEASE_MARGIN sign-ins of one user finishing at the same instant would be needed to
pass the cap, and the login flow itself keeps them apart (each Login supersedes the user's pending
codes, and codes are mailed at most once per AUTH_OTP_RESEND_INTERVAL). The lease costs three writes;
most users never come near the cap, so most sign-ins never pay them (bench scenario 13).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from auth_server.domain import errors
from auth_server.domain.audit import Audit
from auth_server.domain.counters import lease
from auth_server.domain.errors import AuthError, Code, unauthenticated
from auth_server.domain.revocations import USER_SESSIONS_REVOKED, RevocationLog
from auth_server.domain.session_cache import SessionCache
from auth_server.domain.tokens import AccessClaims, AccessTokens, RefreshTokens
from auth_server.infra.clock import utcnow
from auth_server.infra.config import Settings
from auth_server.infra.ids import new_id
from auth_server.infra.keys import KeyRing
from auth_server.store.base import Session, Store, User


@dataclass(frozen=True)
class Caller:
    """Who makes an authenticated call: handed by the guard to the handler."""

    tenant: str
    user: User
    session: Session
    token_expires_at: datetime  # of the access token that made the call
    from_cache: bool = False  # session and user came from the session cache, not a store read just now


@dataclass(frozen=True)
class Device:
    name: str
    ip_address: str
    user_agent: str


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    session_id: str


def _refresh_invalid(message: str = "The refresh token is not valid.") -> AuthError:
    return unauthenticated("REFRESH_TOKEN_INVALID", message)


# The per-user lease around count + evict + create: held for a few store round trips; a holder that dies
# leaves it to lapse after _LEASE_TTL s. A login that cannot take it within _LEASE_WAIT s answers BUSY
# (longer than the TTL, so a lapsed lease is always taken over in time).
_LEASE_TTL = 5.0
_LEASE_WAIT = 6.0
EVICTED = "evicted"  # the revoke_reason of a session ended by the cap
# How far below the cap a sign-in may open a session without the lease (module docstring).
LEASE_MARGIN = 32


class Sessions:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        keys: KeyRing,
        access_tokens: AccessTokens,
        refresh_tokens: RefreshTokens,
        audit: Audit,
        cache: SessionCache | None = None,
    ) -> None:
        self._audit = audit
        self._store = store
        self._cache = cache
        # The one revocation log writer of the process's flows (accounts, recovery and admin use it too),
        # so every revocation made here reaches the session cache before the call returns.
        self.revocations = RevocationLog(store, cache.revoked if cache is not None else None)
        self._settings = settings
        self._keys = keys
        self._access = access_tokens
        self._refresh = refresh_tokens
        self._activity_interval = timedelta(seconds=settings.activity_interval)
        self._refresh_ttl = timedelta(seconds=settings.refresh_ttl)
        self._max_lifetime = timedelta(seconds=settings.session_max_lifetime)

    def _ends_at(self, session: Session) -> datetime:
        """The absolute end of a session (AUTH_SESSION_MAX_LIFETIME after its login), however often it
        was refreshed: a refresh token stolen and kept in use dies with it."""
        return session.created_at + self._max_lifetime

    def _refresh_expiry(self, created_at: datetime, now: datetime) -> datetime:
        # The refresh lifetime slides on each rotation, but never past the session's absolute end.
        return min(now + self._refresh_ttl, created_at + self._max_lifetime)

    # --- authentication (the guard's per-call path: one JWT check, the session cache or one store read,
    # rarely a write)

    def verify(self, token: str) -> AccessClaims:
        """The claims of a person's access token (signature first: a bad token never reaches the store)."""
        return self._access.verify(token)

    def caller_for(self, tenant: str, claims: AccessClaims, *, fresh: bool = False) -> Caller:
        """The live session and user behind already verified claims: from the session cache when it
        admits the call, else one store read (domain/session_cache.py). `fresh`: read the store whatever
        the cache holds (the guard confirms a refusal by role of a `from_cache` caller that way)."""
        now = utcnow()
        cache = self._cache
        epoch = 0
        if cache is not None:
            cached = None if fresh else cache.get(tenant, claims.session_id)
            # Only an admission is taken from the cache; a refusal is confirmed by the store below.
            if cached is not None and self._refusal(*cached, now) is None:
                return self._caller(tenant, *cached, claims, now, from_cache=True)
            epoch = cache.epoch(tenant)
        found = self._store.get_session_and_user(tenant, claims.session_id)
        if found is None:
            raise unauthenticated(*errors.SESSION_NOT_FOUND)
        refusal = self._refusal(*found, now)
        if refusal is not None:
            raise unauthenticated(*refusal)
        if cache is not None:
            cache.put(tenant, *found, epoch)
        return self._caller(tenant, *found, claims, now)

    def _refusal(self, session: Session, user: User, now: datetime) -> tuple[str, str] | None:
        """Why the session's token may not make a call now (reason, message); None if it may."""
        if session.revoked_at is not None:
            return errors.SESSION_REVOKED
        if now >= self._ends_at(session):  # before expires_at, which is capped to the same instant
            return errors.SESSION_EXPIRED
        if session.expires_at <= now:
            return errors.SESSION_REVOKED
        if user.is_locked(now):
            return errors.ACCOUNT_LOCKED
        return None

    def _caller(
        self, tenant: str, session: Session, user: User, claims: AccessClaims, now: datetime, from_cache: bool = False
    ) -> Caller:
        if now - session.last_activity >= self._activity_interval:
            session = self._store.update_session(tenant, session.id, set={"last_activity": now}) or session
            if self._cache is not None:  # the cached copy is older now: the next call reads the store
                self._cache.forget_session(tenant, session.id)
        return Caller(tenant, user, session, claims.expires_at, from_cache)

    def forget_user(self, tenant: str, user_id: str) -> None:
        """A change to the user made outside the revocation log (a profile edit): cached callers go."""
        if self._cache is not None:
            self._cache.forget_user(tenant, user_id)

    # --- opening and rotating

    def open(self, tenant: str, user: User, device: Device) -> IssuedTokens:
        """A new session for the user; beyond AUTH_MAX_SESSIONS_PER_USER the idlest ones end first."""
        cap = self._settings.max_sessions_per_user
        if cap <= 0:
            return self._create(tenant, user, device)
        if len(self._store.list_active_sessions(tenant, user.id, utcnow())) < cap - LEASE_MARGIN:
            return self._create(tenant, user, device)
        with lease(self._store, tenant, f"sessions:{user.id}", ttl=_LEASE_TTL, wait=_LEASE_WAIT):
            live = self._store.list_active_sessions(tenant, user.id, utcnow())  # most recently active first
            excess = len(live) - cap + 1  # more than one when the cap was lowered since
            for idle in reversed(live[-excess:] if excess > 0 else []):
                self._evict(tenant, idle)
            return self._create(tenant, user, device)

    def _evict(self, tenant: str, session: Session) -> None:
        """End a session to make room under the cap (unless something else ended it meanwhile)."""
        revoked = self._store.update_session(
            tenant, session.id, set={"revoked_at": utcnow(), "revoke_reason": EVICTED}, expect={"revoked_at": None}
        )
        if revoked is None:
            return
        self.revocations.session(tenant, session.id, session.user_id)
        self._audit.record(tenant, "session.evicted", user_id=session.user_id, session_id=session.id)

    def _create(self, tenant: str, user: User, device: Device) -> IssuedTokens:
        now = utcnow()
        session_id = new_id()
        nonce = self._refresh.new_nonce()
        refresh_token = self._refresh.mint(tenant, session_id, 0, nonce)
        session = Session(
            id=session_id,
            user_id=user.id,
            device_name=device.name,
            ip_address=device.ip_address,
            user_agent=device.user_agent,
            created_at=now,
            last_activity=now,
            expires_at=self._refresh_expiry(now, now),
            refresh_nonce=nonce,
            refresh_generation=0,
            refresh_hash=self._keys.hash("refresh", refresh_token),
            rotated_at=now,
        )
        self._store.create_session(tenant, session)
        return self._pair(tenant, session, refresh_token)

    def _pair(self, tenant: str, session: Session, refresh_token: str) -> IssuedTokens:
        # Issued "at" rotated_at so a grace-window retry re-derives byte-identical tokens.
        issued_at = session.rotated_at or session.created_at
        access_token, access_expires_at = self._access.issue(session.id, issued_at)
        return IssuedTokens(access_token, access_expires_at, refresh_token, session.expires_at, session.id)

    def refresh(self, tenant: str, token: str) -> IssuedTokens:
        parsed = self._refresh.parse(token)
        if parsed is None:
            raise _refresh_invalid()
        session = self._store.get_session(tenant, parsed.session_id)
        if session is None or not self._refresh.genuine(tenant, parsed, session.refresh_nonce):
            raise _refresh_invalid()  # forged or foreign: invalid, but never a reason to revoke anything
        now = utcnow()
        if session.revoked_at is not None:
            raise unauthenticated(*errors.SESSION_REVOKED)
        if now >= self._ends_at(session):
            raise unauthenticated(*errors.SESSION_EXPIRED)
        if session.expires_at <= now:
            raise _refresh_invalid("The refresh token has expired; log in again.")
        user = self._store.get_user(tenant, session.user_id)
        if user is None:
            raise unauthenticated(*errors.SESSION_NOT_FOUND)
        if user.is_locked(now):
            raise unauthenticated(*errors.ACCOUNT_LOCKED)

        if parsed.generation == session.refresh_generation:
            new_generation = session.refresh_generation + 1
            new_token = self._refresh.mint(tenant, session.id, new_generation, session.refresh_nonce)
            rotated = self._store.update_session(
                tenant,
                session.id,
                set={
                    "refresh_generation": new_generation,
                    "refresh_hash": self._keys.hash("refresh", new_token),
                    "rotated_at": now,
                    "last_activity": now,
                    "expires_at": self._refresh_expiry(session.created_at, now),
                },
                expect={"refresh_generation": session.refresh_generation, "revoked_at": None},
            )
            if rotated is not None:
                return self._pair(tenant, rotated, new_token)
            # Lost a race with another rotation (or a revocation): judge the token against the new state.
            session = self._store.get_session(tenant, session.id) or session
            if session.revoked_at is not None:
                raise unauthenticated(*errors.SESSION_REVOKED)

        grace = self._settings.refresh_grace
        if (
            grace > 0
            and parsed.generation == session.refresh_generation - 1
            and session.rotated_at is not None
            and now - session.rotated_at <= timedelta(seconds=grace)
        ):
            # An idempotent retry of the immediately previous token: the same pair, re-derived.
            current = self._refresh.mint(tenant, session.id, session.refresh_generation, session.refresh_nonce)
            return self._pair(tenant, session, current)
        if parsed.generation < session.refresh_generation:
            revoked = self._store.update_session(
                tenant,
                session.id,
                set={"revoked_at": now, "revoke_reason": "refresh_token_reused"},
                expect={"revoked_at": None},
            )
            if revoked is not None:
                self.revocations.session(tenant, session.id, session.user_id)
            self._audit.record(
                tenant,
                "refresh.reuse_detected",
                user_id=session.user_id,
                session_id=session.id,
                generation=str(parsed.generation),
            )
            raise unauthenticated(
                "REFRESH_TOKEN_REUSED", "This refresh token was already used; the session has been revoked."
            )
        raise _refresh_invalid()

    # --- the caller's devices

    def list(self, caller: Caller) -> list[Session]:
        return self._store.list_active_sessions(caller.tenant, caller.user.id, utcnow())

    def logout(self, caller: Caller, session_id: str) -> None:
        session = self._store.get_session(caller.tenant, session_id) if session_id else None
        if session is None or session.user_id != caller.user.id:
            raise AuthError(Code.NOT_FOUND, "SESSION_NOT_FOUND", "No such session among yours.")
        revoked = self._store.update_session(
            caller.tenant,
            session_id,
            set={"revoked_at": utcnow(), "revoke_reason": "logout"},
            expect={"revoked_at": None},
        )
        if revoked is None:
            raise AuthError(Code.FAILED_PRECONDITION, "SESSION_ALREADY_REVOKED", "This session is already revoked.")
        self.revocations.session(caller.tenant, session_id, caller.user.id)
        self._audit.record(caller.tenant, "session.revoked", user_id=caller.user.id, session_id=session_id)

    def logout_all(self, caller: Caller, keep_current: bool) -> int:
        revoked = self._store.revoke_sessions(
            caller.tenant,
            caller.user.id,
            utcnow(),
            "logout_all",
            except_id=caller.session.id if keep_current else None,
        )
        if revoked:
            # User-wide, so guards also drop the kept session's answers (it merely introspects again).
            self.revocations.user(caller.tenant, USER_SESSIONS_REVOKED, caller.user.id)
        self._audit.record(caller.tenant, "sessions.revoked", user_id=caller.user.id, count=str(revoked))
        return revoked
