/**
 * The decision a guard makes for one call, free of any framework: is this bearer token a live session
 * of a user with one of these roles, according to the auth service's Introspect right now (within the
 * cache TTL)? NestJS's AuthGuard (./nest) asks this; so can any other Node server.
 *
 * - No token: UNAUTHENTICATED / TOKEN_MISSING. A header that is not "Bearer <token>": TOKEN_INVALID.
 * - An inactive token: UNAUTHENTICATED with the auth service's own reason (TOKEN_EXPIRED,
 *   TOKEN_INVALID, SESSION_REVOKED, SESSION_EXPIRED, SESSION_NOT_FOUND, ACCOUNT_LOCKED).
 * - A live user without a required role: PERMISSION_DENIED / INSUFFICIENT_ROLE. Roles are the live
 *   user's from Introspect, never token claims (auth.v1 tokens carry none).
 * - A bad tenant: the auth service's own INVALID_ARGUMENT / NOT_FOUND answer (TENANT_INVALID, TENANT_NOT_FOUND).
 * - The auth service unreachable or failing, or refusing this service's own credentials (no
 *   serviceCredentials where Introspect needs them, a wrong secret): UNAVAILABLE /
 *   AUTH_SERVICE_UNAVAILABLE. Never a pass.
 *
 * Introspect goes through the AuthClient, so with `serviceCredentials` it carries this service's token.
 *
 * Cache: Introspect answers (live or not) are kept for `cacheTtlMs` (default 5000 ms), never past the
 * token's own expiry, in a bounded LRU keyed by tenant and the SHA-256 of the token (the cache never
 * holds a usable credential). Concurrent calls with the same uncached token share one Introspect.
 * 0 turns the cache off.
 *
 * Revocation push: with `serviceCredentials` the gate also subscribes to WatchRevocations and drops
 * cached answers as revocations happen (./revocations.ts); while that stream is down, and without
 * service credentials, the TTL is the revocation delay: a logout, lock or role change on the auth
 * service is seen here within `cacheTtlMs`.
 */
import { createHash } from "node:crypto";

import { status as GrpcStatus } from "@grpc/grpc-js";

import { ServiceTokenError } from "./client";
import type { AuthClient } from "./client";
import { AuthServiceError, DOMAIN, fromServiceError } from "./errors";
import type { IntrospectResponse } from "./gen/auth/v1/auth";
import { RevocationPush, RevocationWatcher } from "./revocations";
import type { RevocationLogger } from "./revocations";
import { roleName } from "./roles";
import type { AppRole } from "./roles";

export const DEFAULT_CACHE_TTL_MS = 5000;
export const DEFAULT_CACHE_SIZE = 10_000;
export const DEFAULT_INTROSPECT_TIMEOUT_MS = 2000;

/** The caller as the auth service knows them now: what @CurrentUser() gives and `request.user` holds. */
export interface AuthUser {
  id: string;
  username: string;
  email: string;
  /** Lower case; "unspecified" only for a role this client version does not know. */
  role: AppRole | "unspecified";
  tenantId: string;
  sessionId: string;
}

/** A bounded LRU of Introspect answers that expire `ttlMs` after they were fetched. */
export class IntrospectionCache {
  private readonly entries = new Map<string, { expires: number; answer: IntrospectResponse }>();
  /**
   * Bumped by every eviction (and clear): an Introspect answer fetched across one is used but not
   * kept, since the revocation it raced with may be newer than the answer.
   */
  epoch = 0;

  constructor(
    readonly ttlMs: number,
    readonly maxEntries: number = DEFAULT_CACHE_SIZE,
    /** Monotonic milliseconds; injectable so tests move time instead of sleeping. */
    private readonly clock: () => number = () => performance.now(),
    /** Wall-clock milliseconds, to compare with the token's expiry. */
    private readonly wallClock: () => number = () => Date.now(),
  ) {
    if (!(ttlMs >= 0) || !(maxEntries >= 1)) throw new RangeError("cache TTL must be >= 0 and size >= 1");
  }

  static key(tenant: string | undefined, token: string): string {
    return `${tenant ?? ""}\u0000${createHash("sha256").update(token).digest("base64")}`;
  }

  get(key: string): IntrospectResponse | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.entries.delete(key);
    if (this.clock() >= entry.expires) return undefined;
    this.entries.set(key, entry); // most recently used last
    return entry.answer;
  }

  /** Keeps an answer; with `epoch` (this.epoch read before the Introspect call), only if no eviction happened meanwhile. */
  put(key: string, answer: IntrospectResponse, epoch?: number): void {
    if (epoch !== undefined && epoch !== this.epoch) return;
    let ttl = this.ttlMs;
    if (answer.active && answer.expiresAt !== undefined) {
      ttl = Math.min(ttl, answer.expiresAt.getTime() - this.wallClock()); // never past the token's expiry
    }
    if (!(ttl > 0)) return;
    this.entries.delete(key);
    this.entries.set(key, { expires: this.clock() + ttl, answer });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
  }

  /** Forgets every answer. */
  clear(): void {
    this.epoch++;
    this.entries.clear();
  }

  /**
   * Drops the answers about this session, or about every session of this user (either may be empty);
   * returns how many. Always bumps the epoch, so an answer in flight is not kept.
   */
  evict(match: { sessionId?: string; userId?: string } = {}): number {
    this.epoch++;
    const { sessionId, userId } = match;
    let dropped = 0;
    for (const [key, { answer }] of this.entries) {
      if ((sessionId && answer.sessionId === sessionId) || (userId && answer.user?.id === userId)) {
        this.entries.delete(key);
        dropped++;
      }
    }
    return dropped;
  }

  get size(): number {
    return this.entries.size;
  }
}

export interface AuthGateOptions {
  cacheTtlMs?: number;
  cacheSize?: number;
  introspectTimeoutMs?: number;
  /** Told when Introspect itself failed (the caller then gets AUTH_SERVICE_UNAVAILABLE). */
  onIntrospectError?: (error: AuthServiceError) => void;
  /**
   * Subscribe to the auth service's WatchRevocations and drop cached answers as revocations happen
   * (see revocations.ts). Default: when the client has serviceCredentials (the stream is for
   * services only) and the cache is on. The stream opens on `start()` or the first call.
   */
  watchRevocations?: boolean;
  /** Where the revocation stream's up/down messages go (default: none; AuthModule passes Nest's Logger). */
  logger?: RevocationLogger;
  clock?: () => number;
  wallClock?: () => number;
}

/** What the guard answers with: the status and ErrorInfo reason, shaped like the auth service's own. */
export function denial(code: GrpcStatus, reason: string, message: string): AuthServiceError {
  return new AuthServiceError(code, reason, message, { domain: DOMAIN });
}

export const TOKEN_MISSING_MESSAGE = "An access token is required: send 'authorization: Bearer <token>'.";
const TOKEN_INVALID_MESSAGE = "The access token is not valid, has expired, or its session has ended.";
export const INSUFFICIENT_ROLE_MESSAGE = "Your role does not allow this call.";

/** The bearer token of an Authorization header value; throws TOKEN_MISSING / TOKEN_INVALID. */
export function bearerToken(header: string | readonly string[] | undefined): string {
  const values = header === undefined ? [] : typeof header === "string" ? [header] : header;
  if (values.length === 0 || values.every((v) => v.trim() === "")) {
    throw denial(GrpcStatus.UNAUTHENTICATED, "TOKEN_MISSING", TOKEN_MISSING_MESSAGE);
  }
  const match = values.length === 1 ? /^\s*bearer\s+(\S+)\s*$/i.exec(values[0] ?? "") : null;
  if (!match?.[1]) throw denial(GrpcStatus.UNAUTHENTICATED, "TOKEN_INVALID", TOKEN_INVALID_MESSAGE);
  return match[1];
}

export class AuthGate {
  readonly cache: IntrospectionCache;
  private readonly introspectTimeoutMs: number;
  private readonly onIntrospectError: ((error: AuthServiceError) => void) | undefined;
  private readonly pending = new Map<string, Promise<IntrospectResponse>>();
  /** The revocation stream's state and events (`revocations.up`, `.fallbacks`, 'down', ...). */
  readonly revocations: RevocationPush;
  private watcher: RevocationWatcher | undefined;

  constructor(
    private readonly client: AuthClient,
    options: AuthGateOptions = {},
  ) {
    this.cache = new IntrospectionCache(
      options.cacheTtlMs ?? DEFAULT_CACHE_TTL_MS,
      options.cacheSize ?? DEFAULT_CACHE_SIZE,
      options.clock,
      options.wallClock,
    );
    this.introspectTimeoutMs = options.introspectTimeoutMs ?? DEFAULT_INTROSPECT_TIMEOUT_MS;
    this.onIntrospectError = options.onIntrospectError;
    this.revocations = new RevocationPush(this.cache, options.logger);
    const watch = options.watchRevocations ?? (client.hasServiceCredentials && this.cache.ttlMs > 0);
    if (watch) this.watcher = new RevocationWatcher(client, this.revocations);
  }

  /** Opens the revocation stream now (in the background) rather than at the first call. */
  start(): void {
    this.watcher?.start();
  }

  /** Ends the revocation stream. The gate still works after, on its cache TTL alone. */
  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }

  /**
   * The live user of `token` (in `tenant`, or the client's / the auth service's default), who must hold
   * one of `roles` when given. Throws an AuthServiceError with the answer to give the caller.
   */
  async authenticate(token: string, tenant: string | undefined, roles?: readonly AppRole[]): Promise<AuthUser> {
    const answer = await this.introspect(token, tenant);
    if (!answer.active || answer.user === undefined) {
      // The auth service says why (TOKEN_EXPIRED: refresh; SESSION_REVOKED: log in again).
      throw denial(GrpcStatus.UNAUTHENTICATED, answer.inactiveReason || "TOKEN_INVALID", TOKEN_INVALID_MESSAGE);
    }
    const { user } = answer;
    const identity: AuthUser = {
      id: user.id,
      username: user.username,
      email: user.email,
      role: roleName(user.role),
      tenantId: answer.tenantId || user.tenantId,
      sessionId: answer.sessionId,
    };
    if (roles !== undefined && roles.length > 0 && !(roles as readonly string[]).includes(identity.role)) {
      throw denial(GrpcStatus.PERMISSION_DENIED, "INSUFFICIENT_ROLE", INSUFFICIENT_ROLE_MESSAGE);
    }
    return identity;
  }

  /** Introspect through the cache; concurrent misses of one key share a single call. */
  private async introspect(token: string, tenant: string | undefined): Promise<IntrospectResponse> {
    this.watcher?.start();
    const key = IntrospectionCache.key(tenant, token);
    const cached = this.cache.get(key);
    if (cached !== undefined) return cached;
    let call = this.pending.get(key);
    if (call === undefined) {
      const epoch = this.cache.epoch; // an eviction before the answer arrives: use it, do not keep it
      call = this.client
        .introspect({ accessToken: token }, { tenant, timeoutMs: this.introspectTimeoutMs })
        .then((answer) => {
          this.cache.put(key, answer, epoch);
          return answer;
        })
        .finally(() => this.pending.delete(key));
      this.pending.set(key, call);
    }
    try {
      return await call;
    } catch (failure) {
      throw this.unreachable(fromServiceError(failure));
    }
  }

  private unreachable(error: AuthServiceError): AuthServiceError {
    const callersTenant = error.code === GrpcStatus.INVALID_ARGUMENT || error.code === GrpcStatus.NOT_FOUND;
    if (callersTenant && error.reason && !(error instanceof ServiceTokenError)) {
      // TENANT_INVALID / TENANT_NOT_FOUND: the caller's own mistake, answered as the auth service does.
      // (Not when this service could not get its own token: that is this service's problem.)
      return denial(error.code, error.reason, error.message);
    }
    this.onIntrospectError?.(error);
    // Fail closed: no answer from the auth service is never a yes.
    return denial(GrpcStatus.UNAVAILABLE, "AUTH_SERVICE_UNAVAILABLE", "The auth service is unavailable; retry later.");
  }
}
