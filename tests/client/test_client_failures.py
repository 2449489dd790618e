"""The client wrapper's behaviour when calls fail, with grpc_testing playing the auth service.

The client blocks on its call in a worker thread while the test takes each request off the testing
channel and answers it: OK, UNAVAILABLE, or a rich error shaped by the server's own error boundary.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import grpc
import grpc_testing
import pytest
from google.protobuf.descriptor import MethodDescriptor

from auth_client import (
    DOMAIN,
    RPCS,
    AlreadyExists,
    AsyncAuthClient,
    AuthClient,
    AuthMetadataInterceptor,
    AuthServiceError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
)
from auth_client.client import DEFAULT_TIMEOUT, WATCH_REVOCATIONS
from auth_client.gen.auth.v1 import admin_pb2, auth_pb2
from auth_server.api.rpc_errors import to_status_proto
from auth_server.domain.errors import AuthError, Code, FieldViolation, validation_failed

AUTH = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)
TAKE_TIMEOUT = 5.0  # seconds the test waits for the client to make a call before failing (never hangs)


class RecordingChannel:
    """grpc_testing's channel drops each invocation's timeout; this wrapper records it (and counts calls)."""

    def __init__(self, channel: grpc_testing.Channel) -> None:
        self.inner = channel
        self.calls: list[tuple[str, float | None]] = []
        self._lock = threading.Lock()

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None) -> Any:
        invoke = self.inner.unary_unary(method, request_serializer, response_deserializer)

        def record(request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None) -> Any:
            with self._lock:
                self.calls.append((method, timeout))
            return invoke(request, timeout=timeout, metadata=metadata, credentials=credentials)

        return record

    def count(self, method: MethodDescriptor) -> int:
        return sum(1 for name, _ in self.calls if name == _path(method))

    def close(self) -> None:
        self.inner.close()


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@pytest.fixture
def channel() -> Iterator[RecordingChannel]:
    recording = RecordingChannel(grpc_testing.channel([AUTH, ADMIN], grpc_testing.strict_real_time()))
    yield recording
    recording.close()


def background(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
    """Runs a blocking client call in a worker thread, so the test can play the server meanwhile.

    A daemon thread, not an executor: grpc_testing enforces no deadline, so a call nobody answers (an
    unexpected retry, say) blocks forever, and must fail its test rather than hang the run at exit.
    """
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(call(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)

    threading.Thread(target=run, daemon=True).start()
    return future


def take(channel: RecordingChannel, method: MethodDescriptor) -> tuple[dict[str, str], Any, Any]:
    """The next request the client makes to `method`: (its metadata as a dict, request, rpc to answer)."""
    taken: list[Any] = []
    worker = threading.Thread(target=lambda: taken.append(channel.inner.take_unary_unary(method)), daemon=True)
    worker.start()
    worker.join(TAKE_TIMEOUT)
    assert taken, f"the client made no {method.name} call within {TAKE_TIMEOUT}s"
    metadata, request, rpc = taken[0]
    return {key: value for key, value in metadata if not key.startswith("grpc.")}, request, rpc


def fail(rpc: Any, error: AuthError) -> None:
    """Answer like the server's error boundary: status code, message and grpc-status-details-bin."""
    status = to_status_proto(error)
    trailer = (("grpc-status-details-bin", status.SerializeToString()),)
    rpc.terminate(None, trailer, grpc.StatusCode[error.code.value], status.message)


def unavailable(rpc: Any) -> None:
    rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "connection refused")  # transport failure: no details


ME = auth_pb2.GetMeResponse(user=auth_pb2.User(id="u1", username="alice"), session_id="s1")


def test_idempotent_call_is_retried_on_unavailable(channel: RecordingChannel) -> None:
    client = AuthClient(channel, token="tok", tenant="acme", retry=FAST_RETRY)  # type: ignore[arg-type]
    future = background(client.get_me)
    for _ in range(2):
        metadata, _, rpc = take(channel, AUTH.methods_by_name["GetMe"])
        assert metadata == {"authorization": "Bearer tok", "x-tenant-id": "acme"}  # every attempt is credentialed
        unavailable(rpc)
    _, _, rpc = take(channel, AUTH.methods_by_name["GetMe"])
    rpc.terminate(ME, (), grpc.StatusCode.OK, "")
    assert future.result(TAKE_TIMEOUT) == ME
    assert channel.count(AUTH.methods_by_name["GetMe"]) == 3


def test_retries_are_bounded(channel: RecordingChannel) -> None:
    client = AuthClient(channel, token="tok", retry=FAST_RETRY)  # type: ignore[arg-type]
    future = background(client.list_users, page_size=10)
    for _ in range(FAST_RETRY.max_attempts):
        _, request, rpc = take(channel, ADMIN.methods_by_name["ListUsers"])
        assert request.page_size == 10
        unavailable(rpc)
    with pytest.raises(Unavailable) as raised:
        future.result(TAKE_TIMEOUT)
    assert raised.value.reason == "" and raised.value.message == "connection refused"
    assert channel.count(ADMIN.methods_by_name["ListUsers"]) == FAST_RETRY.max_attempts


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("Login", lambda c: c.login("alice", "pw")),
        ("VerifyOtp", lambda c: c.verify_otp("login-1", "123456")),
        ("Refresh", lambda c: c.refresh("refresh-1")),
        ("Signup", lambda c: c.signup("alice", "alice@example.com", "pw")),
        ("VerifySignup", lambda c: c.verify_signup("signup-1", "123456")),
        ("ChangePassword", lambda c: c.change_password("old", "new")),
        ("LogoutAll", lambda c: c.logout_all()),
    ],
)
def test_unsafe_calls_are_never_retried(
    channel: RecordingChannel, method: str, call: Callable[[AuthClient], Any]
) -> None:
    client = AuthClient(channel, token="tok", retry=FAST_RETRY)  # type: ignore[arg-type]
    future = background(call, client)
    _, _, rpc = take(channel, AUTH.methods_by_name[method])
    unavailable(rpc)
    with pytest.raises(Unavailable):
        future.result(TAKE_TIMEOUT)
    assert channel.count(AUTH.methods_by_name[method]) == 1  # the call returned: no retry can still be coming


def test_other_failures_are_not_retried(channel: RecordingChannel) -> None:
    client = AuthClient(channel, token="tok", retry=FAST_RETRY)  # type: ignore[arg-type]
    future = background(client.get_me)
    _, _, rpc = take(channel, AUTH.methods_by_name["GetMe"])
    fail(rpc, AuthError(Code.UNAUTHENTICATED, "SESSION_REVOKED", "Your session was revoked."))
    with pytest.raises(Unauthenticated):
        future.result(TAKE_TIMEOUT)
    assert channel.count(AUTH.methods_by_name["GetMe"]) == 1


def test_backoff_never_runs_past_the_deadline(channel: RecordingChannel) -> None:
    # The first backoff (>= 0.5 s with equal jitter on a 1 s cap) cannot fit in a 0.3 s deadline: give up now.
    client = AuthClient(channel, retry=RetryPolicy(initial_backoff=1.0, max_backoff=1.0))  # type: ignore[arg-type]
    future = background(client.introspect, "some-token", timeout=0.3)
    _, _, rpc = take(channel, AUTH.methods_by_name["Introspect"])
    unavailable(rpc)
    with pytest.raises(Unavailable):
        future.result(TAKE_TIMEOUT)
    assert channel.count(AUTH.methods_by_name["Introspect"]) == 1


def test_every_call_carries_a_deadline(channel: RecordingChannel) -> None:
    default = AuthClient(channel, retry=FAST_RETRY)  # type: ignore[arg-type]
    shorter = AuthClient(channel, timeout=2.0)  # type: ignore[arg-type]
    cases = [
        (lambda: default.get_me(), DEFAULT_TIMEOUT),
        (lambda: shorter.get_me(), 2.0),
        (lambda: shorter.get_me(timeout=0.7), 0.7),
        (lambda: shorter.with_token("t").get_me(), 2.0),  # a bound copy keeps the client's deadline
    ]
    for call, expected in cases:
        future = background(call)
        _, _, rpc = take(channel, AUTH.methods_by_name["GetMe"])
        rpc.terminate(ME, (), grpc.StatusCode.OK, "")
        future.result(TAKE_TIMEOUT)
        timeout = channel.calls[-1][1]
        assert timeout is not None and expected - 0.5 < timeout <= expected


def test_retries_share_one_deadline(channel: RecordingChannel) -> None:
    client = AuthClient(channel, timeout=3.0, retry=FAST_RETRY)  # type: ignore[arg-type]
    future = background(client.list_sessions)
    for _ in range(2):
        unavailable(take(channel, AUTH.methods_by_name["ListSessions"])[2])
    take(channel, AUTH.methods_by_name["ListSessions"])[2].terminate(
        auth_pb2.ListSessionsResponse(), (), grpc.StatusCode.OK, ""
    )
    future.result(TAKE_TIMEOUT)
    timeouts = [t for _, t in channel.calls]
    assert len(timeouts) == 3 and all(t is not None for t in timeouts)
    assert timeouts == sorted(timeouts, reverse=True) and timeouts[0] <= 3.0  # each attempt gets what is left


@pytest.mark.parametrize(
    ("error", "expected_type"),
    [
        (AuthError(Code.UNAUTHENTICATED, "SESSION_REVOKED", "Revoked."), Unauthenticated),
        (AuthError(Code.PERMISSION_DENIED, "INSUFFICIENT_ROLE", "No."), PermissionDenied),
        (AuthError(Code.NOT_FOUND, "TENANT_NOT_FOUND", "Unknown tenant."), NotFound),
        (AuthError(Code.ALREADY_EXISTS, "USERNAME_TAKEN", "Taken."), AlreadyExists),
        (AuthError(Code.FAILED_PRECONDITION, "SESSION_ALREADY_REVOKED", "Already."), FailedPrecondition),
        (
            AuthError(Code.RESOURCE_EXHAUSTED, "RATE_LIMITED", "Slow down.", metadata={"retry_after": "30"}),
            ResourceExhausted,
        ),
        (AuthError(Code.UNAVAILABLE, "STORE_UNAVAILABLE", "Store down."), Unavailable),
        (AuthError(Code.INTERNAL, "INTERNAL", "Internal error."), AuthServiceError),
    ],
)
def test_failures_become_typed_exceptions_with_their_reason(
    channel: RecordingChannel, error: AuthError, expected_type: type[AuthServiceError]
) -> None:
    client = AuthClient(channel, retry=RetryPolicy(max_attempts=1))  # type: ignore[arg-type]
    future = background(client.logout_session, "s2")
    fail(take(channel, AUTH.methods_by_name["LogoutSession"])[2], error)
    with pytest.raises(AuthServiceError) as raised:
        future.result(TAKE_TIMEOUT)
    typed = raised.value
    assert type(typed) is expected_type
    assert (typed.code, typed.reason, typed.domain) == (grpc.StatusCode[error.code.value], error.reason, DOMAIN)
    assert typed.message == error.message and typed.metadata == error.metadata
    assert isinstance(typed.__cause__, grpc.RpcError)


def test_validation_failures_carry_bad_request_fields(channel: RecordingChannel) -> None:
    client = AuthClient(channel)  # type: ignore[arg-type]
    future = background(client.signup, "a", "not-an-email", "short")
    _, request, rpc = take(channel, AUTH.methods_by_name["Signup"])
    assert (request.username, request.email) == ("a", "not-an-email")
    fail(
        rpc,
        validation_failed(
            [FieldViolation("username", "3-32 characters."), FieldViolation("email", "Not an e-mail address.")]
        ),
    )
    with pytest.raises(InvalidArgument) as raised:
        future.result(TAKE_TIMEOUT)
    assert raised.value.reason == "VALIDATION_FAILED"
    assert raised.value.fields == ("username", "email")
    assert raised.value.field_violations == [("username", "3-32 characters."), ("email", "Not an e-mail address.")]
    assert "VALIDATION_FAILED" in str(raised.value)


def test_inconsistent_details_fall_back_to_the_status_code(channel: RecordingChannel) -> None:
    # A proxy that rewrote the status but kept the trailer: trust the code the transport reports.
    client = AuthClient(channel)  # type: ignore[arg-type]
    future = background(client.refresh, "r")
    status = to_status_proto(AuthError(Code.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED", "Reused."))
    take(channel, AUTH.methods_by_name["Refresh"])[2].terminate(
        None, (("grpc-status-details-bin", status.SerializeToString()),), grpc.StatusCode.INTERNAL, "proxy error"
    )
    with pytest.raises(AuthServiceError) as raised:
        future.result(TAKE_TIMEOUT)
    assert (raised.value.code, raised.value.reason, raised.value.message) == (
        grpc.StatusCode.INTERNAL,
        "",
        "proxy error",
    )


def test_bound_and_per_call_credentials(channel: RecordingChannel) -> None:
    current = {"token": "first"}
    client = AuthClient(channel, tenant="acme", token=lambda: current["token"])  # type: ignore[arg-type]
    calls: list[tuple[Callable[[], Any], dict[str, str]]] = [
        (lambda: client.get_me(), {"authorization": "Bearer first", "x-tenant-id": "acme"}),
        (lambda: client.with_token("other").get_me(), {"authorization": "Bearer other", "x-tenant-id": "acme"}),
        (lambda: client.get_me(token="call", tenant="beta"), {"authorization": "Bearer call", "x-tenant-id": "beta"}),
        (lambda: client.with_tenant("gamma").get_me(), {"authorization": "Bearer first", "x-tenant-id": "gamma"}),
        # Headers the caller already set are never sent twice.
        (
            lambda: client.get_me(metadata=[("authorization", "Bearer mine"), ("x-device-name", "CI")]),
            {"authorization": "Bearer mine", "x-tenant-id": "acme", "x-device-name": "CI"},
        ),
        (lambda: AuthClient(channel).get_me(), {}),  # type: ignore[arg-type]
    ]
    for call, expected in calls:
        future = background(call)
        metadata, _, rpc = take(channel, AUTH.methods_by_name["GetMe"])
        rpc.terminate(ME, (), grpc.StatusCode.OK, "")
        future.result(TAKE_TIMEOUT)
        assert metadata == expected
    current["token"] = "rotated"  # a callable token is read on every call
    future = background(client.get_me)
    metadata, _, rpc = take(channel, AUTH.methods_by_name["GetMe"])
    rpc.terminate(ME, (), grpc.StatusCode.OK, "")
    future.result(TAKE_TIMEOUT)
    assert metadata["authorization"] == "Bearer rotated"


def test_sync_interceptor_adds_headers_once() -> None:
    seen: list[Any] = []

    def continuation(details: Any, request: Any) -> str:
        seen.append(details)
        return "outcome"

    interceptor = AuthMetadataInterceptor(token=lambda: "tok", tenant="acme")
    details = grpc_details("/auth.v1.AuthService/GetMe", [("x-tenant-id", "mine")])
    assert interceptor.intercept_unary_unary(continuation, details, object()) == "outcome"
    assert seen[0].metadata == [("x-tenant-id", "mine"), ("authorization", "Bearer tok")]
    assert (seen[0].method, seen[0].timeout) == ("/auth.v1.AuthService/GetMe", 1.5)
    nothing = AuthMetadataInterceptor(token=lambda: None)  # a callable may say "no token now"
    nothing.intercept_unary_unary(continuation, grpc_details("/m/M", None), object())
    assert seen[1].metadata == []


def grpc_details(method: str, metadata: Any) -> Any:
    """What grpc hands a client interceptor (any object with these attributes)."""
    return SimpleNamespace(
        method=method, timeout=1.5, metadata=metadata, credentials=None, wait_for_ready=None, compression=None
    )


def test_the_table_covers_the_contract() -> None:
    contract = {_path(m) for service in (AUTH, ADMIN) for m in service.methods if not m.server_streaming}
    assert {_path(m) for m in AUTH.methods if m.server_streaming} == {WATCH_REVOCATIONS}
    assert callable(AuthClient.watch_revocations) and asyncio.iscoroutinefunction(AsyncAuthClient.watch_revocations)
    assert {rpc.path for rpc in RPCS.values()} == contract
    for rpc in RPCS.values():
        assert callable(getattr(AuthClient, rpc.name)) and asyncio.iscoroutinefunction(
            getattr(AsyncAuthClient, rpc.name)
        )
    retried = {rpc.path.rpartition("/")[2] for rpc in RPCS.values() if rpc.idempotent}
    assert retried == {
        "Introspect",
        "IssueServiceToken",  # another token is as good as the first
        "GetMe",
        "ListSessions",
        "ListUsers",
        "ListAuditEvents",
        "UnlockUser",
        "SetUserRole",
        "UpdateMe",  # only the masked fields, set to the same values again
    }


class FakeAioChannel:
    """Stands in for a grpc.aio channel (grpc_testing cannot): answers with a scripted list of outcomes."""

    def __init__(self, outcomes: list[Any]) -> None:
        self.outcomes = outcomes
        self.calls: list[tuple[str, float | None, Any]] = []

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None) -> Any:
        async def invoke(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            self.calls.append((method, timeout, metadata))
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        return invoke


def aio_error(code: grpc.StatusCode, error: AuthError | None = None) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    message = "connection refused"
    if error is not None:
        status = to_status_proto(error)
        trailing.add("grpc-status-details-bin", status.SerializeToString())
        message = status.message
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=message)


def test_async_client_retries_safely_and_raises_typed_errors() -> None:
    async def scenario() -> None:
        channel = FakeAioChannel([aio_error(grpc.StatusCode.UNAVAILABLE)] * 2 + [ME])
        client = AsyncAuthClient(channel, token="tok", retry=FAST_RETRY)  # type: ignore[arg-type]
        assert await client.get_me() == ME
        assert len(channel.calls) == 3
        assert all(("authorization", "Bearer tok") in md for _, _, md in channel.calls)

        channel = FakeAioChannel([aio_error(grpc.StatusCode.UNAVAILABLE), ME])
        client = AsyncAuthClient(channel, retry=FAST_RETRY)  # type: ignore[arg-type]
        with pytest.raises(Unavailable):
            await client.verify_otp("login-1", "123456")
        assert len(channel.calls) == 1  # VerifyOtp is never retried

        denied = AuthError(Code.UNAUTHENTICATED, "OTP_INVALID", "Wrong code.", metadata={"attempts_left": "4"})
        channel = FakeAioChannel([aio_error(grpc.StatusCode.UNAUTHENTICATED, denied)])
        client = AsyncAuthClient(channel)  # type: ignore[arg-type]
        with pytest.raises(Unauthenticated) as raised:
            await client.verify_otp("login-1", "000000", timeout=1.0)
        assert (raised.value.reason, raised.value.metadata) == ("OTP_INVALID", {"attempts_left": "4"})
        assert 0.5 < (channel.calls[0][1] or 0) <= 1.0

    asyncio.run(scenario())
