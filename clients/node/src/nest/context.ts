/**
 * What the guard reads from and leaves on a NestJS call, for the `http` and `rpc` execution contexts.
 *
 * HTTP: `Authorization` and `x-tenant-id` request headers; the user is left on `request.user` (as
 * auth-lib's Passport strategy did) for @CurrentUser().
 * RPC: for a gRPC microservice, the call's metadata (`authorization`, `x-tenant-id`); for other
 * transports (TCP, NATS, ...), the message payload's `headers.authorization` / `authorization` /
 * `accessToken` and `headers["x-tenant-id"]` / `tenantId`. The user is kept beside the call's context
 * and payload objects (a WeakMap), for @CurrentUser().
 */
import type { ExecutionContext } from "@nestjs/common";

import type { AuthUser } from "../gate";

export interface Credentials {
  authorization: string | readonly string[] | undefined;
  tenant: string | undefined;
}

const users = new WeakMap<object, AuthUser>();

/** grpc-js Metadata (duck-typed: the app's own @grpc/grpc-js copy may differ from ours). */
export interface MetadataLike {
  get(key: string): unknown[];
  getMap(): Record<string, unknown>;
  set(key: string, value: unknown): void;
}

export function isMetadata(value: unknown): value is MetadataLike {
  const candidate = value as Partial<MetadataLike> | null;
  return (
    typeof candidate === "object" &&
    candidate !== null &&
    typeof candidate.get === "function" &&
    typeof candidate.getMap === "function" &&
    typeof candidate.set === "function"
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

function text(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (Array.isArray(value) && value.length === 1 && typeof value[0] === "string") return value[0];
  return undefined;
}

function strings(values: unknown[]): string[] {
  return values.filter((v): v is string => typeof v === "string");
}

export function credentialsOf(context: ExecutionContext): Credentials {
  const type = context.getType<string>();
  if (type === "http") {
    const request = context.switchToHttp().getRequest<{ headers?: Record<string, string | string[] | undefined> }>();
    const headers = request.headers ?? {};
    return { authorization: headers["authorization"], tenant: text(headers["x-tenant-id"]) };
  }
  if (type === "rpc") {
    const rpc = context.switchToRpc();
    const metadata: unknown = rpc.getContext();
    if (isMetadata(metadata)) {
      // Several x-tenant-id values are joined as Node joins repeated HTTP headers; the auth service
      // then refuses the tenant rather than this guard picking one.
      const tenants = strings(metadata.get("x-tenant-id"));
      return { authorization: strings(metadata.get("authorization")), tenant: tenants.length ? tenants.join(", ") : undefined };
    }
    const data: unknown = rpc.getData();
    if (isObject(data)) {
      const headers = isObject(data["headers"]) ? data["headers"] : {};
      const header = text(headers["authorization"]) ?? text(data["authorization"]);
      const token = text(data["accessToken"]);
      return {
        authorization: header ?? (token ? `Bearer ${token}` : undefined),
        tenant: text(headers["x-tenant-id"]) ?? text(data["tenantId"]),
      };
    }
    return { authorization: undefined, tenant: undefined };
  }
  // GraphQL, WebSockets, ...: nothing this guard knows how to read; it then answers TOKEN_MISSING.
  return { authorization: undefined, tenant: undefined };
}

/** Keeps the caller's user on the call for @CurrentUser() (and on `request.user` over HTTP). */
export function attachUser(context: ExecutionContext, user: AuthUser): void {
  const type = context.getType<string>();
  if (type === "http") {
    const request = context.switchToHttp().getRequest<Record<string, unknown>>();
    request["user"] = user;
    users.set(request, user);
  } else if (type === "rpc") {
    const rpc = context.switchToRpc();
    for (const holder of [rpc.getContext<unknown>(), rpc.getData<unknown>()]) {
      if (isObject(holder)) users.set(holder, user);
    }
  }
}

export function userOf(context: ExecutionContext): AuthUser | undefined {
  const type = context.getType<string>();
  if (type === "http") {
    const request = context.switchToHttp().getRequest<Record<string, unknown>>();
    return users.get(request);
  }
  if (type === "rpc") {
    const rpc = context.switchToRpc();
    for (const holder of [rpc.getContext<unknown>(), rpc.getData<unknown>()]) {
      const user = isObject(holder) ? users.get(holder) : undefined;
      if (user !== undefined) return user;
    }
  }
  return undefined;
}
