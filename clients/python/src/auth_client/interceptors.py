"""Call credentials as metadata: `authorization: Bearer <token>` and `x-tenant-id: <tenant>`.

`with_auth_metadata` is the one rule for adding them (used by the interceptors here and by the
clients in client.py): a header the call already carries is never added again, because the auth
service (and the guard) reject a call with two `authorization` or `x-tenant-id` values instead of
guessing which one was meant.

The interceptors let any channel (to the auth service or to another service protected by
`auth_client.guard`) send the caller's token: `grpc.intercept_channel(channel, AuthMetadataInterceptor(...))`
for sync channels, `grpc.aio.insecure_channel(target, interceptors=[AsyncAuthMetadataInterceptor(...)])`
for asyncio ones. Token and tenant are fixed values or callables returning the current value (a token
that a refresher swaps out); a callable returning None or "" means "send nothing this time".
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

import grpc

AUTHORIZATION = "authorization"
TENANT = "x-tenant-id"

Metadata = list[tuple[str, str | bytes]]
Source = str | Callable[[], str | None] | None
AsyncSource = str | Callable[[], str | None] | Callable[[], Awaitable[str | None]] | None


def resolve(source: Source) -> str | None:
    """The current value of a fixed-or-callable source."""
    value = source() if callable(source) else source
    return value or None


async def resolve_async(source: AsyncSource) -> str | None:
    """Like `resolve`, also awaiting async callables (a token fetched from a refresher task)."""
    value = source() if callable(source) else source
    if inspect.isawaitable(value):
        value = await value
    return value or None


def with_auth_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None, token: str | None, tenant: str | None
) -> Metadata:
    """`metadata` plus the bearer token and tenant headers, each only if the call does not carry it yet."""
    items: Metadata = list(metadata or ())
    present = {key.lower() for key, _ in items}
    if token and AUTHORIZATION not in present:
        items.append((AUTHORIZATION, f"Bearer {token}"))
    if tenant and TENANT not in present:
        items.append((TENANT, tenant))
    return items


class _CallDetails(NamedTuple):
    """A grpc.ClientCallDetails with new metadata (grpc's own class of it is private)."""

    method: str
    timeout: float | None
    metadata: Metadata | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _ClientCallDetails(_CallDetails, grpc.ClientCallDetails):
    pass


class AuthMetadataInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Adds the bearer token and tenant to every unary call of a sync channel."""

    def __init__(self, token: Source = None, tenant: Source = None) -> None:
        self._token = token
        self._tenant = tenant

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        details: Any = client_call_details  # the attributes below exist at run time but are not typed
        metadata = with_auth_metadata(details.metadata, resolve(self._token), resolve(self._tenant))
        new_details = _ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )
        return continuation(new_details, request)


class AsyncAuthMetadataInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the bearer token and tenant to every unary call of a grpc.aio channel."""

    def __init__(self, token: AsyncSource = None, tenant: AsyncSource = None) -> None:
        self._token = token
        self._tenant = tenant

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        token = await resolve_async(self._token)
        tenant = await resolve_async(self._tenant)
        existing = client_call_details.metadata
        metadata = grpc.aio.Metadata(*with_auth_metadata(existing, token, tenant))
        new_details = client_call_details._replace(metadata=metadata)
        return await continuation(new_details, request)
