"""Typed clients of auth.v1: `AuthClient` (sync channel) and `AsyncAuthClient` (grpc.aio channel).

This module owns how a call is made: one method per RPC of AuthService and AdminService returning the
response message; the caller's tenant and access token, bound once (constructor, `with_token`,
`with_tenant`) or given per call (`tenant=`, `token=` keywords); a deadline on every call; retries;
failures raised as the typed exceptions of `auth_client.errors`.

Deadline: every call has one, `DEFAULT_TIMEOUT` (5 s) unless the client (`timeout=`) or the call
(`timeout=`) says otherwise. It bounds the whole call, retries and backoff included.

Retries happen ONLY on UNAVAILABLE and ONLY for RPCs that are safe to send twice (`idempotent` in the
table below): Introspect, IssueServiceToken (a second token is as good), GetMe, ListSessions,
ListUsers, ListAuditEvents (reads), UnlockUser,
SetUserRole and UpdateMe (setting the same state again changes nothing). Everything else is sent once, because the
first attempt may have reached the server before the connection failed: Signup (a second mail, or
RATE_LIMITED by the address's resend interval), VerifySignup (a single-use code: OTP_INVALID on the
retry once the account was made), Login (a second e-mailed code, a failed-login count), VerifyOtp and
Refresh (single-use codes and rotating refresh tokens: a replayed refresh token revokes the session as
stolen), ChangePassword, ChangeEmail (a second mail whose code supersedes the first),
ConfirmEmailChange (a single-use code), UnlockAccount (single-use token), LogoutSession (SESSION_ALREADY_REVOKED on
the retry), LogoutAll (the retry's own session may be gone), LockUser, RequestPasswordReset (a second mail
whose code supersedes the first), ResetPassword and ReportSignIn (single-use code and token). Attempts are bounded
(`RetryPolicy.max_attempts`, default 3), spaced by exponential backoff with jitter, and never run past
the call's deadline.

One declarative table (`RPCS`: method name, request type, idempotent) drives both clients; the RPC path
and the response type are read from the service descriptors, so the table cannot disagree with the
contract.

Service credentials: `service_credentials=(client_id, client_secret)` of a service account makes the
client get its own service token (IssueServiceToken, in the client's tenant), send it on the calls
whose `(auth.v1.access)` rule admits services but not people (Introspect), get a new one before it
expires (a minute before, or half its life if shorter), and once more after an UNAUTHENTICATED answer
(a rotation or a restart of the server's keys). A per-call `token=` still wins.
"""

from __future__ import annotations

import asyncio
import copy
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack, cast

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message

from auth_client.errors import Unauthenticated, from_rpc_error
from auth_client.gen.auth.v1 import access_pb2, admin_pb2, auth_pb2
from auth_client.interceptors import Metadata, Source, resolve, with_auth_metadata

DEFAULT_TIMEOUT = 5.0  # seconds per call, retries included
# The one server-streaming RPC: not in RPCS (a stream has no deadline and is never retried as a call is).
WATCH_REVOCATIONS = "/auth.v1.AuthService/WatchRevocations"


@dataclass(frozen=True)
class Rpc:
    """One RPC of the contract as the clients call it."""

    name: str  # the client method, e.g. "get_me"
    path: str  # "/auth.v1.AuthService/GetMe"
    request: type[Message]
    response: type[Message]
    idempotent: bool  # safe to send again after UNAVAILABLE
    service_only: bool = False  # its access rule admits service accounts and not people (Introspect)


def _rpc(name: str, request: type[Message], idempotent: bool) -> Rpc:
    """Find the RPC taking `request` in its file's services (buf STANDARD: one request type per RPC)."""
    descriptor = request.DESCRIPTOR
    for service in descriptor.file.services_by_name.values():
        for method in service.methods:
            if method.input_type is descriptor:
                response = message_factory.GetMessageClass(method.output_type)
                rule = method.GetOptions().Extensions[access_pb2.access]
                service_only = bool(rule.services) and not (rule.authenticated or rule.roles or rule.public)
                path = f"/{service.full_name}/{method.name}"
                return Rpc(name, path, request, response, idempotent, service_only)
    raise LookupError(f"no RPC of {descriptor.file.name} takes {descriptor.full_name}")


# (client method, request type, idempotent): the only per-RPC table; see the module docstring for why.
RPCS: dict[str, Rpc] = {
    rpc.name: rpc
    for rpc in (
        _rpc("signup", auth_pb2.SignupRequest, False),
        _rpc("verify_signup", auth_pb2.VerifySignupRequest, False),
        _rpc("login", auth_pb2.LoginRequest, False),
        _rpc("verify_otp", auth_pb2.VerifyOtpRequest, False),
        _rpc("refresh", auth_pb2.RefreshRequest, False),
        _rpc("unlock_account", auth_pb2.UnlockAccountRequest, False),
        _rpc("request_password_reset", auth_pb2.RequestPasswordResetRequest, False),
        _rpc("reset_password", auth_pb2.ResetPasswordRequest, False),
        _rpc("report_sign_in", auth_pb2.ReportSignInRequest, False),
        _rpc("issue_service_token", auth_pb2.IssueServiceTokenRequest, True),
        _rpc("introspect", auth_pb2.IntrospectRequest, True),
        _rpc("get_me", auth_pb2.GetMeRequest, True),
        _rpc("list_sessions", auth_pb2.ListSessionsRequest, True),
        _rpc("logout_session", auth_pb2.LogoutSessionRequest, False),
        _rpc("logout_all", auth_pb2.LogoutAllRequest, False),
        _rpc("change_password", auth_pb2.ChangePasswordRequest, False),
        _rpc("update_me", auth_pb2.UpdateMeRequest, True),
        _rpc("change_email", auth_pb2.ChangeEmailRequest, False),
        _rpc("confirm_email_change", auth_pb2.ConfirmEmailChangeRequest, False),
        _rpc("list_users", admin_pb2.ListUsersRequest, True),
        _rpc("list_audit_events", admin_pb2.ListAuditEventsRequest, True),
        _rpc("lock_user", admin_pb2.LockUserRequest, False),
        _rpc("unlock_user", admin_pb2.UnlockUserRequest, True),
        _rpc("set_user_role", admin_pb2.SetUserRoleRequest, True),
    )
}


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of idempotent calls on UNAVAILABLE, with exponential backoff and jitter."""

    max_attempts: int = 3  # first attempt included; 1 disables retries
    initial_backoff: float = 0.1  # seconds before the second attempt (before jitter)
    multiplier: float = 2.0
    max_backoff: float = 1.0

    def delay(self, rpc: Rpc, error: grpc.StatusCode, attempt: int, remaining: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when the failure is final."""
        if not rpc.idempotent or error is not grpc.StatusCode.UNAVAILABLE or attempt >= self.max_attempts:
            return None
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        # "Equal jitter": somewhere in [cap/2, cap], so many clients cut off together do not come back in
        # step, while each still waits long enough to let the server recover.
        delay = cap / 2 + random.uniform(0, cap / 2)  # noqa: S311 (spreading retries, not a secret)
        if delay >= remaining:  # the next attempt would start after the deadline: give up now
            return None
        return delay


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)


class CallOptions(TypedDict, total=False):
    """Per-call keywords every client method accepts."""

    tenant: str | None  # x-tenant-id for this call (default: the client's bound tenant)
    token: str | None  # access token for this call (default: the client's bound token)
    timeout: float | None  # deadline in seconds for this call, retries included (default: the client's)
    metadata: Sequence[tuple[str, str]]  # extra headers, e.g. ("x-device-name", "CI runner")


# Get a new service token this long before the current one expires (or at half its life, if shorter).
SERVICE_TOKEN_MARGIN = 60.0


class _ServiceToken:
    """The current service token of a client and its bound copies (shared, so one token serves them all)."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        if not client_id or not client_secret:
            raise ValueError("service_credentials must be (client_id, client_secret), both non-empty")
        self.client_id = client_id
        self.client_secret = client_secret
        self.token: str | None = None
        self.renew_at = 0.0  # time.monotonic() after which a new token is fetched
        self.lock = threading.Lock()  # sync client: one fetch at a time
        self.async_lock: asyncio.Lock | None = None  # asyncio client, made inside its loop

    def current(self) -> str | None:
        return self.token if self.token is not None and time.monotonic() < self.renew_at else None

    def keep(self, response: auth_pb2.IssueServiceTokenResponse) -> str:
        lifetime = max(0.0, response.expires_at.ToDatetime().timestamp() - response_now())
        self.token = response.access_token
        self.renew_at = time.monotonic() + lifetime - min(SERVICE_TOKEN_MARGIN, lifetime / 2)
        return self.token

    def forget(self, token: str) -> None:
        if self.token == token:
            self.token = None


def response_now() -> float:
    """Wall-clock seconds (expires_at is a wall-clock time); a function so tests can move it."""
    return time.time()


def _update_me_request(
    name: str | None, phone: str | None, update_mask: Sequence[str] | None
) -> auth_pb2.UpdateMeRequest:
    """An UpdateMeRequest whose mask names the fields given, so an empty value clears a field (the
    server reads an empty mask as "every field set", where an empty value would mean "leave it")."""
    given = {field: value for field, value in (("name", name), ("phone", phone)) if value is not None}
    request = auth_pb2.UpdateMeRequest(**given)
    request.update_mask.paths.extend(update_mask if update_mask is not None else given)
    return request


def _role(role: int | str) -> access_pb2.Role:
    """A Role value from the enum value or a name ("admin", "ROLE_ADMIN")."""
    if isinstance(role, str):
        name = role.upper()
        role = access_pb2.Role.Value(name if name.startswith("ROLE_") else f"ROLE_{name}")
    return cast(access_pb2.Role, role)


class _ClientBase:
    """What both clients share: bound credentials, metadata, deadlines, request building."""

    _channel: Any

    def __init__(
        self,
        *,
        tenant: Source,
        token: Source,
        timeout: float,
        retry: RetryPolicy | None,
        service_credentials: tuple[str, str] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive: every call needs a deadline")
        self._service = _ServiceToken(*service_credentials) if service_credentials else None
        self._tenant = tenant
        self._token = token
        self._timeout = timeout
        self._retry = retry or DEFAULT_RETRY
        self._owns_channel = False
        self._callables: dict[str, Any] = {}

    def _bound(self, **changes: Any) -> Any:
        # A bound copy shares the channel (and its cached callables) but never closes it.
        other = copy.copy(self)
        for key, value in changes.items():
            setattr(other, key, value)
        other._owns_channel = False
        return other

    def with_token(self, token: Source) -> Any:
        """A copy of this client sending `token` (a value or a callable) on every call."""
        return self._bound(_token=token)

    def with_tenant(self, tenant: Source) -> Any:
        """A copy of this client sending `tenant` as x-tenant-id on every call."""
        return self._bound(_tenant=tenant)

    def _callable(self, rpc: Rpc) -> Any:
        found = self._callables.get(rpc.path)
        if found is None:
            found = self._channel.unary_unary(
                rpc.path,
                request_serializer=rpc.request.SerializeToString,
                response_deserializer=rpc.response.FromString,
            )
            self._callables[rpc.path] = found
        return found

    def _stream_callable(self) -> Any:
        found = self._callables.get(WATCH_REVOCATIONS)
        if found is None:
            found = self._channel.unary_stream(
                WATCH_REVOCATIONS,
                request_serializer=auth_pb2.WatchRevocationsRequest.SerializeToString,
                response_deserializer=auth_pb2.WatchRevocationsResponse.FromString,
            )
            self._callables[WATCH_REVOCATIONS] = found
        return found

    @property
    def has_service_credentials(self) -> bool:
        """Whether this client was given service_credentials (and so can fetch a service token)."""
        return self._service is not None

    def _uses_service_token(self, rpc: Rpc, options: CallOptions) -> bool:
        return self._service is not None and rpc.service_only and not options.get("token")

    def _prepare(self, options: CallOptions, service_token: str | None = None) -> tuple[float, Metadata]:
        """(the call's deadline as a monotonic time, its metadata)."""
        timeout = options.get("timeout") or self._timeout
        token = options.get("token") or service_token or resolve(self._token)
        tenant = options.get("tenant") or resolve(self._tenant)
        # Headers the caller put in `metadata` win: with_auth_metadata never adds a second one.
        metadata = with_auth_metadata(options.get("metadata"), token, tenant)
        return time.monotonic() + timeout, metadata


class AuthClient(_ClientBase):
    """Sync client of AuthService and AdminService.

    >>> client = AuthClient("auth.internal:50051", tenant="acme")
    >>> me = client.with_token(access_token).get_me()

    `target_or_channel` is an address (the client then owns and closes the channel; `credentials` makes
    it a TLS channel) or an existing `grpc.Channel` (left open by `close()`).
    """

    def __init__(
        self,
        target_or_channel: str | grpc.Channel,
        *,
        tenant: Source = None,
        token: Source = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        service_credentials: tuple[str, str] | None = None,
    ) -> None:
        """`service_credentials`: (client_id, client_secret) of a service account (see the module docstring)."""
        super().__init__(
            tenant=tenant, token=token, timeout=timeout, retry=retry, service_credentials=service_credentials
        )
        if isinstance(target_or_channel, str):
            if credentials is None:
                self._channel = grpc.insecure_channel(target_or_channel, options=list(options))
            else:
                self._channel = grpc.secure_channel(target_or_channel, credentials, options=list(options))
            self._owns_channel = True
        else:
            self._channel = target_or_channel

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> AuthClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_token(self, token: Source) -> AuthClient:
        return super().with_token(token)

    def with_tenant(self, tenant: Source) -> AuthClient:
        return super().with_tenant(tenant)

    def service_token(self, timeout: float | None = None) -> str:
        """The current service token (service_credentials), fetched when missing or about to expire."""
        holder = self._service
        if holder is None:
            raise ValueError("this client has no service_credentials")
        token = holder.current()
        if token is not None:  # fresh: no lock on the common path
            return token
        with holder.lock:
            token = holder.current()
            if token is None:
                response = self.issue_service_token(holder.client_id, holder.client_secret, timeout=timeout)
                token = holder.keep(response)
            return token

    def call(self, rpc: Rpc, request: Message, options: CallOptions) -> Any:
        """Make one call of `rpc`, with deadline, retries and typed errors (the typed methods use this)."""
        if self._uses_service_token(rpc, options):
            assert self._service is not None
            token = self.service_token(options.get("timeout"))
            try:
                return self._call(rpc, request, options, token)
            except Unauthenticated:  # rotated, deleted and re-made, or the server's keys changed: once more
                self._service.forget(token)
                return self._call(rpc, request, options, self.service_token(options.get("timeout")))
        return self._call(rpc, request, options)

    def _call(self, rpc: Rpc, request: Message, options: CallOptions, service_token: str | None = None) -> Any:
        deadline, metadata = self._prepare(options, service_token)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                return self._callable(rpc)(request, timeout=max(remaining, 0.0), metadata=metadata)
            except grpc.RpcError as error:
                typed = from_rpc_error(error)
                delay = self._retry.delay(rpc, typed.code, attempt, deadline - time.monotonic())
                if delay is None:
                    raise typed from error
            time.sleep(delay)

    def watch_revocations(self, after: str = "", *, tenant: str | None = None) -> Any:
        """Open AuthService.WatchRevocations (service credentials needed): an iterator of
        WatchRevocationsResponse with no deadline, to `cancel()` when done. Errors surface as grpc.RpcError
        while iterating (the guard reconnects by itself; see auth_client.guard)."""
        token = self.service_token()
        _, metadata = self._prepare({"tenant": tenant} if tenant else {}, token)
        return self._stream_callable()(auth_pb2.WatchRevocationsRequest(after=after), metadata=metadata)

    # AuthService
    def signup(
        self, username: str, email: str, password: str, name: str = "", phone: str = "", **options: Unpack[CallOptions]
    ) -> auth_pb2.SignupResponse:
        """Start a sign-up: a code is mailed; `verify_signup` with the response's signup_id creates the user."""
        request = auth_pb2.SignupRequest(username=username, email=email, password=password, name=name, phone=phone)
        return self.call(RPCS["signup"], request, options)

    def verify_signup(self, signup_id: str, code: str, **options: Unpack[CallOptions]) -> auth_pb2.VerifySignupResponse:
        request = auth_pb2.VerifySignupRequest(signup_id=signup_id, code=code)
        return self.call(RPCS["verify_signup"], request, options)

    def login(
        self, username_or_email: str, password: str, device_token: str = "", **options: Unpack[CallOptions]
    ) -> auth_pb2.LoginResponse:
        """`device_token`: what an earlier verify_otp returned on this device (lets it past a spent failure budget)."""
        request = auth_pb2.LoginRequest(
            username_or_email=username_or_email, password=password, device_token=device_token
        )
        return self.call(RPCS["login"], request, options)

    def verify_otp(
        self, login_id: str, otp: str, device_name: str | None = None, **options: Unpack[CallOptions]
    ) -> auth_pb2.VerifyOtpResponse:
        request = auth_pb2.VerifyOtpRequest(login_id=login_id, otp=otp, device_name=device_name)
        return self.call(RPCS["verify_otp"], request, options)

    def refresh(self, refresh_token: str, **options: Unpack[CallOptions]) -> auth_pb2.RefreshResponse:
        request = auth_pb2.RefreshRequest(refresh_token=refresh_token)
        return self.call(RPCS["refresh"], request, options)

    def unlock_account(self, token: str, **options: Unpack[CallOptions]) -> auth_pb2.UnlockAccountResponse:
        # `token` here is the e-mailed unlock token (a request field), not the access token.
        return self.call(RPCS["unlock_account"], auth_pb2.UnlockAccountRequest(token=token), options)

    def request_password_reset(
        self, username_or_email: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.RequestPasswordResetResponse:
        """Mails a reset code when the name is an account's; the answer is the same either way."""
        request = auth_pb2.RequestPasswordResetRequest(username_or_email=username_or_email)
        return self.call(RPCS["request_password_reset"], request, options)

    def reset_password(
        self, reset_id: str, code: str, new_password: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.ResetPasswordResponse:
        request = auth_pb2.ResetPasswordRequest(reset_id=reset_id, code=code, new_password=new_password)
        return self.call(RPCS["reset_password"], request, options)

    def report_sign_in(self, token: str, **options: Unpack[CallOptions]) -> auth_pb2.ReportSignInResponse:
        """Redeem a new-device notice's "This wasn't me" token: ends that session, starts a reset."""
        return self.call(RPCS["report_sign_in"], auth_pb2.ReportSignInRequest(token=token), options)

    def issue_service_token(
        self, client_id: str, client_secret: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.IssueServiceTokenResponse:
        request = auth_pb2.IssueServiceTokenRequest(client_id=client_id, client_secret=client_secret)
        return self.call(RPCS["issue_service_token"], request, options)

    def introspect(self, access_token: str, **options: Unpack[CallOptions]) -> auth_pb2.IntrospectResponse:
        request = auth_pb2.IntrospectRequest(access_token=access_token)
        return self.call(RPCS["introspect"], request, options)

    def get_me(self, **options: Unpack[CallOptions]) -> auth_pb2.GetMeResponse:
        return self.call(RPCS["get_me"], auth_pb2.GetMeRequest(), options)

    def list_sessions(self, **options: Unpack[CallOptions]) -> auth_pb2.ListSessionsResponse:
        return self.call(RPCS["list_sessions"], auth_pb2.ListSessionsRequest(), options)

    def logout_session(self, session_id: str, **options: Unpack[CallOptions]) -> auth_pb2.LogoutSessionResponse:
        request = auth_pb2.LogoutSessionRequest(session_id=session_id)
        return self.call(RPCS["logout_session"], request, options)

    def logout_all(self, keep_current: bool = False, **options: Unpack[CallOptions]) -> auth_pb2.LogoutAllResponse:
        request = auth_pb2.LogoutAllRequest(keep_current=keep_current)
        return self.call(RPCS["logout_all"], request, options)

    def change_password(
        self, current_password: str, new_password: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.ChangePasswordResponse:
        request = auth_pb2.ChangePasswordRequest(current_password=current_password, new_password=new_password)
        return self.call(RPCS["change_password"], request, options)

    def update_me(
        self,
        name: str | None = None,
        phone: str | None = None,
        update_mask: Sequence[str] | None = None,
        **options: Unpack[CallOptions],
    ) -> auth_pb2.UpdateMeResponse:
        """Change the caller's profile: only the fields given (None: leave it), so `update_me(phone="")`
        removes the phone. `update_mask` names the fields explicitly instead (AIP-134)."""
        request = _update_me_request(name, phone, update_mask)
        return self.call(RPCS["update_me"], request, options)

    def change_email(
        self, new_email: str, current_password: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.ChangeEmailResponse:
        """Mail a code to `new_email`; `confirm_email_change` with the response's change_id makes the change."""
        request = auth_pb2.ChangeEmailRequest(new_email=new_email, current_password=current_password)
        return self.call(RPCS["change_email"], request, options)

    def confirm_email_change(
        self, change_id: str, code: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.ConfirmEmailChangeResponse:
        request = auth_pb2.ConfirmEmailChangeRequest(change_id=change_id, code=code)
        return self.call(RPCS["confirm_email_change"], request, options)

    # AdminService
    def list_users(
        self, page_size: int = 0, page_token: str = "", **options: Unpack[CallOptions]
    ) -> admin_pb2.ListUsersResponse:
        request = admin_pb2.ListUsersRequest(page_size=page_size, page_token=page_token)
        return self.call(RPCS["list_users"], request, options)

    def list_audit_events(
        self, page_size: int = 0, page_token: str = "", user_id: str = "", **options: Unpack[CallOptions]
    ) -> admin_pb2.ListAuditEventsResponse:
        request = admin_pb2.ListAuditEventsRequest(page_size=page_size, page_token=page_token, user_id=user_id)
        return self.call(RPCS["list_audit_events"], request, options)

    def lock_user(self, user_id: str, reason: str = "", **options: Unpack[CallOptions]) -> admin_pb2.LockUserResponse:
        request = admin_pb2.LockUserRequest(user_id=user_id, reason=reason)
        return self.call(RPCS["lock_user"], request, options)

    def unlock_user(self, user_id: str, **options: Unpack[CallOptions]) -> admin_pb2.UnlockUserResponse:
        request = admin_pb2.UnlockUserRequest(user_id=user_id)
        return self.call(RPCS["unlock_user"], request, options)

    def set_user_role(
        self, user_id: str, role: int | str, **options: Unpack[CallOptions]
    ) -> admin_pb2.SetUserRoleResponse:
        request = admin_pb2.SetUserRoleRequest(user_id=user_id, role=_role(role))
        return self.call(RPCS["set_user_role"], request, options)


class AsyncAuthClient(_ClientBase):
    """grpc.aio client of AuthService and AdminService; the same methods as AuthClient, awaited.

    Create it inside the running event loop (grpc.aio channels belong to the loop that made them).
    """

    def __init__(
        self,
        target_or_channel: str | grpc.aio.Channel,
        *,
        tenant: Source = None,
        token: Source = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        service_credentials: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(
            tenant=tenant, token=token, timeout=timeout, retry=retry, service_credentials=service_credentials
        )
        if isinstance(target_or_channel, str):
            if credentials is None:
                self._channel = grpc.aio.insecure_channel(target_or_channel, options=list(options))
            else:
                self._channel = grpc.aio.secure_channel(target_or_channel, credentials, options=list(options))
            self._owns_channel = True
        else:
            self._channel = target_or_channel

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._channel

    async def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> AsyncAuthClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def with_token(self, token: Source) -> AsyncAuthClient:
        return super().with_token(token)

    def with_tenant(self, tenant: Source) -> AsyncAuthClient:
        return super().with_tenant(tenant)

    async def service_token(self, timeout: float | None = None) -> str:
        """The current service token (service_credentials), fetched when missing or about to expire."""
        holder = self._service
        if holder is None:
            raise ValueError("this client has no service_credentials")
        token = holder.current()
        if token is not None:  # fresh: no lock on the common path
            return token
        if holder.async_lock is None:
            holder.async_lock = asyncio.Lock()
        async with holder.async_lock:
            token = holder.current()
            if token is None:
                response = await self.issue_service_token(holder.client_id, holder.client_secret, timeout=timeout)
                token = holder.keep(response)
            return token

    async def watch_revocations(self, after: str = "", *, tenant: str | None = None) -> Any:
        """Open AuthService.WatchRevocations (service credentials needed): an async iterator of
        WatchRevocationsResponse with no deadline, to `cancel()` when done."""
        token = await self.service_token()
        _, metadata = self._prepare({"tenant": tenant} if tenant else {}, token)
        return self._stream_callable()(auth_pb2.WatchRevocationsRequest(after=after), metadata=metadata)

    async def call(self, rpc: Rpc, request: Message, options: CallOptions) -> Any:
        """Make one call of `rpc`, with deadline, retries and typed errors (the typed methods use this)."""
        if self._uses_service_token(rpc, options):
            assert self._service is not None
            token = await self.service_token(options.get("timeout"))
            try:
                return await self._call(rpc, request, options, token)
            except Unauthenticated:
                self._service.forget(token)
                return await self._call(rpc, request, options, await self.service_token(options.get("timeout")))
        return await self._call(rpc, request, options)

    async def _call(self, rpc: Rpc, request: Message, options: CallOptions, service_token: str | None = None) -> Any:
        deadline, metadata = self._prepare(options, service_token)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                invoke: Callable[..., Awaitable[Any]] = self._callable(rpc)
                return await invoke(request, timeout=max(remaining, 0.0), metadata=metadata)
            except grpc.RpcError as error:
                typed = from_rpc_error(error)
                delay = self._retry.delay(rpc, typed.code, attempt, deadline - time.monotonic())
                if delay is None:
                    raise typed from error
            await asyncio.sleep(delay)

    # AuthService
    async def signup(
        self, username: str, email: str, password: str, name: str = "", phone: str = "", **options: Unpack[CallOptions]
    ) -> auth_pb2.SignupResponse:
        """Start a sign-up: a code is mailed; `verify_signup` with the response's signup_id creates the user."""
        request = auth_pb2.SignupRequest(username=username, email=email, password=password, name=name, phone=phone)
        return await self.call(RPCS["signup"], request, options)

    async def verify_signup(
        self, signup_id: str, code: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.VerifySignupResponse:
        request = auth_pb2.VerifySignupRequest(signup_id=signup_id, code=code)
        return await self.call(RPCS["verify_signup"], request, options)

    async def login(
        self, username_or_email: str, password: str, device_token: str = "", **options: Unpack[CallOptions]
    ) -> auth_pb2.LoginResponse:
        request = auth_pb2.LoginRequest(
            username_or_email=username_or_email, password=password, device_token=device_token
        )
        return await self.call(RPCS["login"], request, options)

    async def verify_otp(
        self, login_id: str, otp: str, device_name: str | None = None, **options: Unpack[CallOptions]
    ) -> auth_pb2.VerifyOtpResponse:
        request = auth_pb2.VerifyOtpRequest(login_id=login_id, otp=otp, device_name=device_name)
        return await self.call(RPCS["verify_otp"], request, options)

    async def refresh(self, refresh_token: str, **options: Unpack[CallOptions]) -> auth_pb2.RefreshResponse:
        request = auth_pb2.RefreshRequest(refresh_token=refresh_token)
        return await self.call(RPCS["refresh"], request, options)

    async def unlock_account(self, token: str, **options: Unpack[CallOptions]) -> auth_pb2.UnlockAccountResponse:
        request = auth_pb2.UnlockAccountRequest(token=token)
        return await self.call(RPCS["unlock_account"], request, options)

    async def request_password_reset(
        self, username_or_email: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.RequestPasswordResetResponse:
        """Mails a reset code when the name is an account's; the answer is the same either way."""
        request = auth_pb2.RequestPasswordResetRequest(username_or_email=username_or_email)
        return await self.call(RPCS["request_password_reset"], request, options)

    async def reset_password(
        self, reset_id: str, code: str, new_password: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.ResetPasswordResponse:
        request = auth_pb2.ResetPasswordRequest(reset_id=reset_id, code=code, new_password=new_password)
        return await self.call(RPCS["reset_password"], request, options)

    async def report_sign_in(self, token: str, **options: Unpack[CallOptions]) -> auth_pb2.ReportSignInResponse:
        """Redeem a new-device notice's "This wasn't me" token: ends that session, starts a reset."""
        return await self.call(RPCS["report_sign_in"], auth_pb2.ReportSignInRequest(token=token), options)

    async def issue_service_token(
        self, client_id: str, client_secret: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.IssueServiceTokenResponse:
        request = auth_pb2.IssueServiceTokenRequest(client_id=client_id, client_secret=client_secret)
        return await self.call(RPCS["issue_service_token"], request, options)

    async def introspect(self, access_token: str, **options: Unpack[CallOptions]) -> auth_pb2.IntrospectResponse:
        request = auth_pb2.IntrospectRequest(access_token=access_token)
        return await self.call(RPCS["introspect"], request, options)

    async def get_me(self, **options: Unpack[CallOptions]) -> auth_pb2.GetMeResponse:
        return await self.call(RPCS["get_me"], auth_pb2.GetMeRequest(), options)

    async def list_sessions(self, **options: Unpack[CallOptions]) -> auth_pb2.ListSessionsResponse:
        request = auth_pb2.ListSessionsRequest()
        return await self.call(RPCS["list_sessions"], request, options)

    async def logout_session(self, session_id: str, **options: Unpack[CallOptions]) -> auth_pb2.LogoutSessionResponse:
        request = auth_pb2.LogoutSessionRequest(session_id=session_id)
        return await self.call(RPCS["logout_session"], request, options)

    async def logout_all(
        self, keep_current: bool = False, **options: Unpack[CallOptions]
    ) -> auth_pb2.LogoutAllResponse:
        request = auth_pb2.LogoutAllRequest(keep_current=keep_current)
        return await self.call(RPCS["logout_all"], request, options)

    async def change_password(
        self, current_password: str, new_password: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.ChangePasswordResponse:
        request = auth_pb2.ChangePasswordRequest(current_password=current_password, new_password=new_password)
        return await self.call(RPCS["change_password"], request, options)

    async def update_me(
        self,
        name: str | None = None,
        phone: str | None = None,
        update_mask: Sequence[str] | None = None,
        **options: Unpack[CallOptions],
    ) -> auth_pb2.UpdateMeResponse:
        """As AuthClient.update_me."""
        request = _update_me_request(name, phone, update_mask)
        return await self.call(RPCS["update_me"], request, options)

    async def change_email(
        self, new_email: str, current_password: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.ChangeEmailResponse:
        request = auth_pb2.ChangeEmailRequest(new_email=new_email, current_password=current_password)
        return await self.call(RPCS["change_email"], request, options)

    async def confirm_email_change(
        self, change_id: str, code: str, **options: Unpack[CallOptions]
    ) -> auth_pb2.ConfirmEmailChangeResponse:
        request = auth_pb2.ConfirmEmailChangeRequest(change_id=change_id, code=code)
        return await self.call(RPCS["confirm_email_change"], request, options)

    # AdminService
    async def list_users(
        self, page_size: int = 0, page_token: str = "", **options: Unpack[CallOptions]
    ) -> admin_pb2.ListUsersResponse:
        request = admin_pb2.ListUsersRequest(page_size=page_size, page_token=page_token)
        return await self.call(RPCS["list_users"], request, options)

    async def list_audit_events(
        self, page_size: int = 0, page_token: str = "", user_id: str = "", **options: Unpack[CallOptions]
    ) -> admin_pb2.ListAuditEventsResponse:
        request = admin_pb2.ListAuditEventsRequest(page_size=page_size, page_token=page_token, user_id=user_id)
        return await self.call(RPCS["list_audit_events"], request, options)

    async def lock_user(
        self, user_id: str, reason: str = "", **options: Unpack[CallOptions]
    ) -> admin_pb2.LockUserResponse:
        request = admin_pb2.LockUserRequest(user_id=user_id, reason=reason)
        return await self.call(RPCS["lock_user"], request, options)

    async def unlock_user(self, user_id: str, **options: Unpack[CallOptions]) -> admin_pb2.UnlockUserResponse:
        request = admin_pb2.UnlockUserRequest(user_id=user_id)
        return await self.call(RPCS["unlock_user"], request, options)

    async def set_user_role(
        self, user_id: str, role: int | str, **options: Unpack[CallOptions]
    ) -> admin_pb2.SetUserRoleResponse:
        request = admin_pb2.SetUserRoleRequest(user_id=user_id, role=_role(role))
        return await self.call(RPCS["set_user_role"], request, options)
