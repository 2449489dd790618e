"""The MongoDB adapter: the production store, with pymongo's synchronous client.

Each tenant has its own database (`<prefix><tenant>`) holding three flat collections: `users`,
`sessions` and `login_challenges`, each document keyed by the record id as `_id`. Every field is
always written, None as null, so an expectation of None matches an unset field with a plain equality.
A conditional update is one `find_one_and_update` with the expected values in its filter: a single
atomic operation on one document, never read-modify-write. Nothing relies on transactions, $lookup
or TTL, which FerretDB 1.24 (the test server) does not provide; TTL indexes are cleanup only and are
created when the server accepts them.

FerretDB 1.24 is the exception to "atomic": it runs findAndModify and multi-updates as a read, then a
write of the whole document by _id (FerretDB#3040), so two concurrent updates can both pass their
filter and one write is lost. When `open()` finds FerretDB (buildInfo.ferretdbVersion) every write
of this process goes through one lock, which restores one-winner semantics for a single server
process; several replicas against one FerretDB would still race, so production runs on MongoDB.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl, unquote_plus

from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.uri_parser import parse_uri

from auth_server.store._fields import (
    CHALLENGE,
    COUNTER,
    EVENT,
    REVOCATION,
    SERVICE_ACCOUNT,
    SESSION,
    USER,
    RecordSpec,
    check_record,
    check_update,
)
from auth_server.store.base import (
    AuditEvent,
    Counter,
    DuplicateKey,
    LoginChallenge,
    Revocation,
    ServiceAccount,
    Session,
    StoreUnavailable,
    User,
    replace,
)

_log = logging.getLogger(__name__)

_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_BAD_DB_CHARS = re.compile(r'[/\\. "$\x00]')
_DEFAULT_PREFIX = "auth_"
# Platform-wide records (service accounts) live in `<prefix>_platform`: a tenant id never starts with
# "_", so no tenant's database can have this name.
_PLATFORM_SUFFIX = "_platform"
_MAX_DB_NAME = 63  # bytes; MongoDB refuses longer database names
_MAX_PREFIX = 30  # leaves room for a recognisable piece of the tenant id beside its hash
# Fail fast when the server is away (a login should not hang), but let a slow query finish.
# Concerns stated rather than inherited from the deployment's defaults, which an operator may have
# lowered: a write (a revocation, a rotation) is acknowledged only once a majority of the replica set
# has it, so a failover cannot roll it back; a write that meets a failover is retried once by the
# driver on the new primary; and reads go to the primary, so a session check never reads a secondary
# that has not yet seen a revocation. Any of them written in the URI wins (see MongoStore).
_CLIENT_DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 2000,
    "connectTimeoutMS": 2000,
    "socketTimeoutMS": 5000,
    "w": "majority",
    "retryWrites": True,
    "readPreference": "primary",
}
# Expired sessions and challenges stay a day before cleanup, so a late caller still gets "expired"
# rather than "not found" and an operator can see what happened.
_TTL_GRACE_S = 86400

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _database_prefix(uri: str) -> str:
    """The database-name prefix the URI asks for (its database path plus "_"), or "auth_"."""
    try:
        if uri.startswith("mongodb+srv://"):
            # parse_uri would resolve the SRV record here, and nothing may touch the network before
            # open(); MongoClient checks the rest then. This is pymongo's own split of the path.
            hosts, _, database = uri[len("mongodb+srv://") :].partition("?")[0].partition("/")
            if not hosts.rpartition("@")[2]:
                raise ValueError("no host name")
            database = unquote_plus(database).split(".", 1)[0] or None
        else:
            database = parse_uri(uri)["database"]
    except (PyMongoError, ValueError) as exc:
        raise ValueError(f"invalid MongoDB URI: {_redact(str(exc), uri)}") from None
    if database is None:
        return _DEFAULT_PREFIX
    if _BAD_DB_CHARS.search(database) or len(database.encode()) + 1 > _MAX_PREFIX:
        raise ValueError(
            f"invalid MongoDB URI: the database name must be a plain name of at most "
            f"{_MAX_PREFIX - 1} bytes (it prefixes each tenant's database)"
        )
    return database + "_"


def _redact(message: str, uri: str) -> str:
    userinfo = uri.partition("://")[2].partition("/")[0].rpartition("@")[0]
    password = userinfo.partition(":")[2]
    return message.replace(password, "****") if password else message


def database_name(prefix: str, tenant: str) -> str:
    """The tenant's database: prefix + tenant, or a shortened tenant plus its hash when too long."""
    if not _TENANT.fullmatch(tenant):
        raise ValueError(f"invalid tenant id {tenant!r}")
    name = prefix + tenant
    if len(name.encode()) <= _MAX_DB_NAME:
        return name
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:16]
    keep = min(40, _MAX_DB_NAME - len(prefix.encode()) - len(digest) - 1)
    return f"{prefix}{tenant[:keep]}_{digest}"


def _unavailable_on_connection_failure(method: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except ConnectionFailure as exc:  # covers AutoReconnect, NetworkTimeout, ServerSelectionTimeout
            raise StoreUnavailable(f"MongoDB unavailable: {exc}") from exc

    return wrapper


def _key(name: str) -> str:
    return "_id" if name == "id" else name


def _document(spec: RecordSpec, record: Any) -> dict[str, Any]:
    return {_key(name): getattr(record, name) for name in spec.names}


def _record(spec: RecordSpec, document: Mapping[str, Any] | None) -> Any:
    if document is None:
        return None
    # A field missing from an older document takes the record's default.
    return spec.cls(**{name: document[_key(name)] for name in spec.names if _key(name) in document})


@dataclass(slots=True)
class _Tenant:
    users: Collection[dict[str, Any]]
    sessions: Collection[dict[str, Any]]
    challenges: Collection[dict[str, Any]]
    events: Collection[dict[str, Any]]
    counters: Collection[dict[str, Any]]
    revocations: Collection[dict[str, Any]]
    prepared: bool = False


class MongoStore:
    """The Store protocol over one MongoDB deployment, one database per tenant."""

    def __init__(self, uri: str, **client_options: Any) -> None:
        """No connection yet (see open()); `client_options` go to MongoClient, e.g. event_listeners."""
        self._uri = uri
        self._prefix = _database_prefix(uri)
        given = {key.lower() for key, _ in parse_qsl(uri.partition("?")[2])}
        # Options written in the URI win over our defaults.
        self._options: dict[str, Any] = {k: v for k, v in _CLIENT_DEFAULTS.items() if k.lower() not in given}
        self._options.update(client_options)
        self._client: MongoClient[dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._tenants: dict[str, _Tenant] = {}
        self._write_lock: threading.Lock | None = None  # set when the server is FerretDB (see above)
        self._platform: Collection[dict[str, Any]] | None = None  # service accounts, indexed once

    def platform_database(self) -> str:
        """The database of platform-wide records (service accounts), outside every tenant's."""
        return self._prefix + _PLATFORM_SUFFIX

    def database_for(self, tenant: str) -> str:
        """The name of the tenant's database (for operators and test clean-up)."""
        return database_name(self._prefix, tenant)

    # -- connection and tenants ------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._client is None:
                try:
                    # tz_aware: BSON dates come back as aware UTC datetimes, equal to what was written.
                    self._client = MongoClient(self._uri, tz_aware=True, tzinfo=UTC, **self._options)
                except PyMongoError as exc:  # e.g. an SRV name that does not resolve
                    raise StoreUnavailable(f"MongoDB unavailable: {_redact(str(exc), self._uri)}") from exc
        try:
            self.ping()
            self._write_lock = threading.Lock() if self._is_ferretdb() else None
        except StoreUnavailable:
            self.close()
            raise

    def _is_ferretdb(self) -> bool:
        assert self._client is not None
        try:
            return "ferretdbVersion" in self._client.admin.command("buildInfo")
        except PyMongoError as exc:
            raise StoreUnavailable(f"MongoDB unavailable: {exc}") from exc

    def _writing(self) -> contextlib.AbstractContextManager[Any]:
        """Serialise writes on a server whose single-document updates are not atomic (FerretDB)."""
        return self._write_lock or contextlib.nullcontext()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._tenants.clear()
            self._platform = None
        if client is not None:
            client.close()

    def ping(self) -> None:
        client = self._client
        if client is None:
            raise StoreUnavailable("the MongoDB store is not open")
        try:
            client.admin.command("ping")
        except PyMongoError as exc:  # unreachable, or reachable but refusing us (authentication)
            raise StoreUnavailable(f"MongoDB unavailable: {exc}") from exc

    @_unavailable_on_connection_failure
    def prepare_tenant(self, tenant: str) -> None:
        self._tenant(tenant)

    def _tenant(self, tenant: str) -> _Tenant:
        """The tenant's collections, its indexes created on first use in this process."""
        with self._lock:
            if self._client is None:
                raise StoreUnavailable("the MongoDB store is not open")
            handles = self._tenants.get(tenant)
            if handles is None:
                db = self._client[self.database_for(tenant)]
                handles = _Tenant(
                    db["users"],
                    db["sessions"],
                    db["login_challenges"],
                    db["audit_events"],
                    db["counters"],
                    db["revocations"],
                )
                self._tenants[tenant] = handles
        if not handles.prepared:
            # Outside the lock: index creation is a network round trip and other tenants must not
            # wait for it. Two threads may both prepare a new tenant; creating an index is idempotent.
            _create_indexes(handles)
            with self._lock:
                handles.prepared = True
        return handles

    # -- shared operations -----------------------------------------------------------------------

    def _update(
        self,
        collection: Collection[dict[str, Any]],
        spec: RecordSpec,
        record_id: str,
        set: Mapping[str, Any] | None,
        inc: Mapping[str, int] | None,
        expect: Mapping[str, Any] | None,
        derived: Mapping[str, Any] | None = None,
    ) -> Any:
        check_update(spec, set, inc, expect)
        # Equality on a checked scalar value; null also matches a missing field, as the protocol wants.
        query = {"_id": record_id, **(expect or {})}
        update = {op: dict(values) for op, values in (("$set", set), ("$inc", inc)) if values}
        if derived:  # adapter-only fields that follow a record field (the users' phone_key)
            update.setdefault("$set", {}).update(derived)
        if not update:  # nothing to change: a conditional read
            return _record(spec, collection.find_one(query))
        with self._writing():
            document = collection.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
        return _record(spec, document)

    # -- users -----------------------------------------------------------------------------------

    @_unavailable_on_connection_failure
    def create_user(self, tenant: str, user: User) -> None:
        check_record(USER, user)
        users = self._tenant(tenant).users
        try:
            users.insert_one({**_document(USER, user), "phone_key": _phone_key(user.phone, user.id)})
        except DuplicateKeyError as exc:
            values = {"username": user.username, "email": user.email, "phone": user.phone}
            raise DuplicateKey(_duplicate_field(exc, users, values, user.id)) from exc

    @_unavailable_on_connection_failure
    def get_user(self, tenant: str, user_id: str) -> User | None:
        return _record(USER, self._tenant(tenant).users.find_one({"_id": user_id}))

    @_unavailable_on_connection_failure
    def find_user(self, tenant: str, username_or_email: str) -> User | None:
        key = username_or_email
        branches: list[dict[str, Any]] = [{"username": key}, {"email": key}]
        if key:
            branches.append({"phone_key": key})
        found = list(self._tenant(tenant).users.find({"$or": branches}).limit(3))
        # Should one user's username equal another's e-mail or phone, the username match wins, then the e-mail.
        found.sort(key=lambda doc: (doc["username"] != key, doc["email"] != key))
        return _record(USER, found[0]) if found else None

    @_unavailable_on_connection_failure
    def list_users(self, tenant: str, after_id: str | None, limit: int) -> list[User]:
        if limit <= 0:  # MongoDB reads limit 0 as "no limit"
            return []
        query = {"_id": {"$gt": after_id}} if after_id else {}
        cursor = self._tenant(tenant).users.find(query).sort("_id", ASCENDING).limit(limit)
        return [_record(USER, doc) for doc in cursor]

    @_unavailable_on_connection_failure
    def count_users(self, tenant: str, role: str, *, unlocked_only: bool = False) -> int:
        query: dict[str, Any] = {"role": role}
        if unlocked_only:
            query["admin_locked"] = {"$ne": True}
        return self._tenant(tenant).users.count_documents(query)

    @_unavailable_on_connection_failure
    def update_user(
        self,
        tenant: str,
        user_id: str,
        *,
        set: dict[str, Any] | None = None,
        inc: dict[str, int] | None = None,
        expect: dict[str, Any] | None = None,
    ) -> User | None:
        users = self._tenant(tenant).users
        derived = {"phone_key": _phone_key(set["phone"], user_id)} if set and "phone" in set else None
        try:
            return self._update(users, USER, user_id, set, inc, expect, derived)
        except OperationFailure as exc:
            # FerretDB 1.24 answers a unique index's refusal of findAndModify as InternalError (code 1).
            if not isinstance(exc, DuplicateKeyError) and "UNIQUE constraint failed" not in str(exc):
                raise
            values = {name: (set or {}).get(name) for name in ("username", "email", "phone")}
            raise DuplicateKey(_duplicate_field(exc, users, values, user_id)) from exc

    # -- sessions --------------------------------------------------------------------------------

    @_unavailable_on_connection_failure
    def create_session(self, tenant: str, session: Session) -> None:
        check_record(SESSION, session)
        self._tenant(tenant).sessions.insert_one(_document(SESSION, session))

    @_unavailable_on_connection_failure
    def get_session(self, tenant: str, session_id: str) -> Session | None:
        return _record(SESSION, self._tenant(tenant).sessions.find_one({"_id": session_id}))

    @_unavailable_on_connection_failure
    def get_session_and_user(self, tenant: str, session_id: str) -> tuple[Session, User] | None:
        """Two round trips (session, then its user): FerretDB 1.24 has no $lookup to join them."""
        handles = self._tenant(tenant)
        session = _record(SESSION, handles.sessions.find_one({"_id": session_id}))
        if session is None:
            return None
        user = _record(USER, handles.users.find_one({"_id": session.user_id}))
        return None if user is None else (session, user)

    @_unavailable_on_connection_failure
    def list_active_sessions(self, tenant: str, user_id: str, now: datetime) -> list[Session]:
        query = {"user_id": user_id, "revoked_at": None, "expires_at": {"$gt": now}}
        order = [("last_activity", DESCENDING), ("_id", DESCENDING)]
        cursor = self._tenant(tenant).sessions.find(query).sort(order)
        return [_record(SESSION, doc) for doc in cursor]

    @_unavailable_on_connection_failure
    def update_session(
        self,
        tenant: str,
        session_id: str,
        *,
        set: dict[str, Any] | None = None,
        inc: dict[str, int] | None = None,
        expect: dict[str, Any] | None = None,
    ) -> Session | None:
        return self._update(self._tenant(tenant).sessions, SESSION, session_id, set, inc, expect)

    @_unavailable_on_connection_failure
    def revoke_sessions(
        self, tenant: str, user_id: str, now: datetime, reason: str, except_id: str | None = None
    ) -> int:
        query: dict[str, Any] = {"user_id": user_id, "revoked_at": None}
        if except_id is not None:
            query["_id"] = {"$ne": except_id}
        sessions = self._tenant(tenant).sessions
        with self._writing():
            result = sessions.update_many(query, {"$set": {"revoked_at": now, "revoke_reason": reason}})
        return result.modified_count

    # -- login challenges ------------------------------------------------------------------------

    @_unavailable_on_connection_failure
    def create_challenge(self, tenant: str, challenge: LoginChallenge) -> None:
        check_record(CHALLENGE, challenge)
        self._tenant(tenant).challenges.insert_one(_document(CHALLENGE, challenge))

    @_unavailable_on_connection_failure
    def get_challenge(self, tenant: str, challenge_id: str) -> LoginChallenge | None:
        return _record(CHALLENGE, self._tenant(tenant).challenges.find_one({"_id": challenge_id}))

    @_unavailable_on_connection_failure
    def update_challenge(
        self,
        tenant: str,
        challenge_id: str,
        *,
        set: dict[str, Any] | None = None,
        inc: dict[str, int] | None = None,
        expect: dict[str, Any] | None = None,
    ) -> LoginChallenge | None:
        return self._update(self._tenant(tenant).challenges, CHALLENGE, challenge_id, set, inc, expect)

    @_unavailable_on_connection_failure
    def consume_challenges(self, tenant: str, user_id: str, now: datetime, kind: str = "login") -> int:
        challenges = self._tenant(tenant).challenges
        # A document written before kinds existed has none and is a login challenge.
        of_kind: dict[str, Any] = {"$in": [kind, None]} if kind == "login" else kind
        with self._writing():
            result = challenges.update_many(
                {"user_id": user_id, "kind": of_kind, "consumed_at": None}, {"$set": {"consumed_at": now}}
            )
        return result.modified_count

    # -- counters --------------------------------------------------------------------------------

    @_unavailable_on_connection_failure
    def create_counter(self, tenant: str, counter: Counter) -> None:
        check_record(COUNTER, counter)
        try:
            with self._writing():
                self._tenant(tenant).counters.insert_one(_document(COUNTER, counter))
        except DuplicateKeyError:
            raise DuplicateKey("id") from None

    @_unavailable_on_connection_failure
    def get_counter(self, tenant: str, counter_id: str) -> Counter | None:
        return _record(COUNTER, self._tenant(tenant).counters.find_one({"_id": counter_id}))

    @_unavailable_on_connection_failure
    def update_counter(
        self,
        tenant: str,
        counter_id: str,
        *,
        set: dict[str, Any] | None = None,
        inc: dict[str, int] | None = None,
        expect: dict[str, Any] | None = None,
    ) -> Counter | None:
        return self._update(self._tenant(tenant).counters, COUNTER, counter_id, set, inc, expect)

    @_unavailable_on_connection_failure
    def delete_counters(self, tenant: str, prefix: str) -> int:
        if not prefix:
            raise ValueError("delete_counters needs a non-empty prefix")
        with self._writing():
            result = self._tenant(tenant).counters.delete_many({"_id": {"$regex": "^" + re.escape(prefix)}})
        return result.deleted_count

    # -- audit trail -----------------------------------------------------------------------------

    @_unavailable_on_connection_failure
    def record_event(self, tenant: str, event: AuditEvent) -> None:
        check_record(EVENT, event)
        self._tenant(tenant).events.insert_one(_document(EVENT, event))

    @_unavailable_on_connection_failure
    def list_events(
        self, tenant: str, before_id: str | None, limit: int, user_id: str | None = None
    ) -> list[AuditEvent]:
        if limit <= 0:
            return []
        query: dict[str, Any] = {"_id": {"$lt": before_id}} if before_id else {}
        if user_id is not None:
            query["user_id"] = user_id
        cursor = self._tenant(tenant).events.find(query).sort("_id", DESCENDING).limit(limit)
        return [_record(EVENT, document) for document in cursor]

    # -- service accounts (platform-wide) ---------------------------------------------------------

    def _service_accounts(self) -> Collection[dict[str, Any]]:
        with self._lock:
            if self._client is None:
                raise StoreUnavailable("the MongoDB store is not open")
            collection = self._platform
            if collection is not None:
                return collection
            collection = self._client[self.platform_database()]["service_accounts"]
        collection.create_index("name", unique=True, name="name_unique")  # idempotent
        with self._lock:
            self._platform = collection
        return collection

    @_unavailable_on_connection_failure
    def create_service_account(self, account: ServiceAccount) -> None:
        check_record(SERVICE_ACCOUNT, account)
        accounts = self._service_accounts()
        try:
            with self._writing():
                accounts.insert_one(_document(SERVICE_ACCOUNT, account))
        except DuplicateKeyError:
            # Which key: FerretDB 1.24 does not say, so look for the name (the insert failed, so one is there).
            taken = accounts.find_one({"name": account.name}, projection={"_id": 1})
            raise DuplicateKey("name" if taken is not None else "id") from None

    @_unavailable_on_connection_failure
    def get_service_account(self, account_id: str) -> ServiceAccount | None:
        return _record(SERVICE_ACCOUNT, self._service_accounts().find_one({"_id": account_id}))

    @_unavailable_on_connection_failure
    def find_service_account(self, name: str) -> ServiceAccount | None:
        return _record(SERVICE_ACCOUNT, self._service_accounts().find_one({"name": name}))

    @_unavailable_on_connection_failure
    def list_service_accounts(self) -> list[ServiceAccount]:
        cursor = self._service_accounts().find({}).sort("name", ASCENDING)
        return [_record(SERVICE_ACCOUNT, document) for document in cursor]

    @_unavailable_on_connection_failure
    def update_service_account(
        self,
        account_id: str,
        *,
        set: dict[str, Any] | None = None,
        inc: dict[str, int] | None = None,
        expect: dict[str, Any] | None = None,
    ) -> ServiceAccount | None:
        return self._update(self._service_accounts(), SERVICE_ACCOUNT, account_id, set, inc, expect)

    @_unavailable_on_connection_failure
    def delete_service_account(self, account_id: str) -> bool:
        with self._writing():
            result = self._service_accounts().delete_one({"_id": account_id})
        return result.deleted_count > 0

    # -- revocation log (per tenant, append-only) ------------------------------------------------
    # `_id` is the seq: the largest one plus one, inserted with _id's unique index deciding between
    # concurrent appenders (the loser reads again and takes the next). Seq N is inserted only after its
    # writer saw N-1 committed, so the visible log is always a gap-free prefix and a reader resuming after
    # the largest seq it saw skips nothing, across any number of replicas. Unique inserts are exact on
    # FerretDB too, unlike $inc on a counter document (docs/DESIGN section 4), hence not a counter.

    @_unavailable_on_connection_failure
    def append_revocation(self, tenant: str, revocation: Revocation) -> Revocation:
        check_record(REVOCATION, revocation)
        log = self._tenant(tenant).revocations
        document = {name: getattr(revocation, name) for name in REVOCATION.names if name != "seq"}
        for _ in range(_MAX_APPEND_ATTEMPTS):
            last = log.find_one({}, projection={"_id": 1}, sort=[("_id", DESCENDING)])
            seq = (last["_id"] if last else 0) + 1
            try:
                with self._writing():
                    log.insert_one({"_id": seq, **document})
            except DuplicateKeyError:
                continue  # another writer took this seq: read the new end and try the next
            return replace(revocation, seq=seq)
        raise StoreUnavailable("revocation log: too many concurrent appends")

    @_unavailable_on_connection_failure
    def list_revocations(self, tenant: str, after_seq: int, limit: int) -> list[Revocation]:
        if limit <= 0:
            return []
        cursor = self._tenant(tenant).revocations.find({"_id": {"$gt": after_seq}}).sort("_id", ASCENDING).limit(limit)
        return [
            Revocation(seq=doc["_id"], **{name: doc[name] for name in REVOCATION.names if name != "seq"})
            for doc in cursor
        ]

    @_unavailable_on_connection_failure
    def last_revocation_seq(self, tenant: str) -> int:
        last = self._tenant(tenant).revocations.find_one({}, projection={"_id": 1}, sort=[("_id", DESCENDING)])
        return int(last["_id"]) if last else 0

    # -- purge -------------------------------------------------------------------------------------

    @_unavailable_on_connection_failure
    def purge(
        self,
        tenant: str,
        *,
        ended_before: datetime,
        events_before: datetime,
        revocations_before: datetime | None = None,
    ) -> dict[str, int]:
        handles = self._tenant(tenant)

        def delete(collection: Collection[dict[str, Any]], query: dict[str, Any]) -> int:
            # A filtered delete_many: each document goes only if it still matches (idempotent).
            with self._writing():
                return collection.delete_many(query).deleted_count

        ended = {"$lt": ended_before}
        counts = {
            "sessions": delete(handles.sessions, {"$or": [{"expires_at": ended}, {"revoked_at": ended}]}),
            "challenges": delete(handles.challenges, {"$or": [{"expires_at": ended}, {"consumed_at": ended}]}),
            "counters": delete(handles.counters, {"expires_at": ended}),
            "audit_events": delete(handles.events, {"created_at": {"$lt": events_before}}),
            "revocations": 0,
        }
        with self._writing():
            counts["unlock_tokens"] = handles.users.update_many(
                {"unlock_token_expires_at": ended},
                {"$set": {"unlock_token_hash": None, "unlock_token_expires_at": None}},
            ).modified_count
        if revocations_before is not None:
            # Never the newest entry: the next seq is the largest one plus one (append_revocation).
            last = handles.revocations.find_one({}, projection={"_id": 1}, sort=[("_id", DESCENDING)])
            if last is not None:
                query = {"_id": {"$lt": last["_id"]}, "at": {"$lt": revocations_before}}
                counts["revocations"] = delete(handles.revocations, query)
        return counts


# Attempts at appending one revocation when other writers keep taking the next seq (each retry reads anew).
_MAX_APPEND_ATTEMPTS = 50


def _phone_key(phone: str, user_id: str) -> str:
    """The users' `phone_key`: the phone, or for a user without one a value no phone can be ("~" + id).
    Phones are unique per tenant when set; FerretDB has no partial or sparse index, so the unique index
    is on this derived field instead."""
    return phone or f"~{user_id}"


def _create_indexes(handles: _Tenant) -> None:
    handles.users.create_index("username", unique=True, name="username_unique")
    handles.users.create_index("email", unique=True, name="email_unique")
    # Users written before phones were unique have no phone_key yet.
    for doc in handles.users.find({"phone_key": {"$exists": False}}, projection={"phone": 1}):
        key = _phone_key(doc.get("phone", ""), doc["_id"])
        handles.users.update_one({"_id": doc["_id"], "phone_key": {"$exists": False}}, {"$set": {"phone_key": key}})
    try:
        handles.users.create_index("phone_key", unique=True, name="phone_unique")
    except OperationFailure as exc:  # two users of an older version share a phone: serve on, say what to fix
        where = handles.users.database.name
        _log.error("cannot enforce unique phones in %s until the duplicates are removed: %s", where, exc)
    handles.sessions.create_index("user_id", name="user_id")
    handles.challenges.create_index("user_id", name="user_id")
    handles.events.create_index([("user_id", ASCENDING), ("_id", DESCENDING)], name="user_id_newest")
    for collection in (handles.sessions, handles.challenges, handles.counters):
        try:
            collection.create_index("expires_at", name="expires_at_ttl", expireAfterSeconds=_TTL_GRACE_S)
        except OperationFailure as exc:
            # Cleanup only (FerretDB 1.24 refuses TTL indexes): correctness never depends on it.
            _log.warning("no TTL index on %s.%s: %s", collection.database.name, collection.name, exc)
            # purge() searches by expiry all the same (on FerretDB it is the only cleanup there is).
            collection.create_index("expires_at", name="expires_at")
    # What purge() searches by (issue 14).
    handles.sessions.create_index("revoked_at", name="revoked_at")
    handles.challenges.create_index("consumed_at", name="consumed_at")
    handles.users.create_index("unlock_token_expires_at", name="unlock_token_expires_at")
    handles.events.create_index("created_at", name="created_at")
    handles.revocations.create_index("at", name="at")


def _duplicate_field(
    exc: OperationFailure, users: Collection[dict[str, Any]], values: Mapping[str, str | None], user_id: str
) -> str:
    """Which unique field the failed write of `values` to user `user_id` collided on: "username",
    "email", "phone" or "id"."""
    details = exc.details or {}
    # MongoDB names the key (keyPattern/keyValue since 4.2, the index name in the message before).
    for key in details.get("keyPattern") or details.get("keyValue") or {}:
        return {"_id": "id", "phone_key": "phone"}.get(key, str(key))
    message = str(details.get("errmsg", exc))
    indexes = (("username", "username_unique"), ("email", "email_unique"), ("phone", "phone_unique"), ("id", "_id_"))
    for field, index in indexes:
        if f"index: {index} " in message:
            return field
    # FerretDB 1.24 names neither: look for the taken value in another user (the write failed, so one is there).
    for field, key in (("username", "username"), ("email", "email"), ("phone", "phone_key")):
        value = values.get(field)
        if value and users.find_one({key: value, "_id": {"$ne": user_id}}, projection={"_id": 1}) is not None:
            return field
    return "id"
