"""Client package of the auth.v1 service.

- `auth_client.gen.auth.v1`: the generated messages and stubs (never edited by hand).
- `AuthClient` / `AsyncAuthClient`: typed calls with deadlines, safe retries and typed errors.
- `AuthMetadataInterceptor` / `AsyncAuthMetadataInterceptor`: send a bearer token and tenant on any channel.
- `Guard` / `AsyncGuard` with `current_identity()`: protect another gRPC service's methods with auth.v1 tokens,
  by the `(auth.v1.access)` rules in that service's own proto.
- `proto_include()` and `python -m auth_client.protoc`: `auth/v1/access.proto` for that service's protoc.
- `AuthServiceError` and its subclasses, `from_rpc_error`: failures as typed exceptions.
"""

from auth_client._include import include_dir as proto_include
from auth_client.client import DEFAULT_TIMEOUT, NO_RETRY, RPCS, AsyncAuthClient, AuthClient, CallOptions, RetryPolicy
from auth_client.errors import (
    DOMAIN,
    AlreadyExists,
    AuthServiceError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from auth_client.guard import (
    DEFAULT_CACHE_TTL,
    DEFAULT_INTROSPECT_TIMEOUT,
    AccessRuleError,
    AsyncGuard,
    Guard,
    Identity,
    IntrospectionCache,
    current_identity,
    optional_identity,
)
from auth_client.interceptors import AsyncAuthMetadataInterceptor, AuthMetadataInterceptor

__all__ = [
    "DEFAULT_CACHE_TTL",
    "DEFAULT_INTROSPECT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "DOMAIN",
    "NO_RETRY",
    "RPCS",
    "AccessRuleError",
    "AlreadyExists",
    "AsyncAuthClient",
    "AsyncAuthMetadataInterceptor",
    "AsyncGuard",
    "AuthClient",
    "AuthMetadataInterceptor",
    "AuthServiceError",
    "CallOptions",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Guard",
    "Identity",
    "IntrospectionCache",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "current_identity",
    "from_rpc_error",
    "optional_identity",
    "proto_include",
]
