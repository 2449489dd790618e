/**
 * Revocation push: the guard's subscription to AuthService.WatchRevocations (service callers only),
 * which drops cached Introspect answers as revocations happen instead of letting them live out the
 * cache TTL. The same rules as the Python guard (clients/python/src/auth_client/guard.py):
 *
 * - A session revoked drops the answers about that session; a user-wide event (all sessions revoked,
 *   password changed, user locked, role changed) drops every cached answer of that user; a service
 *   account's event drops nothing (the cache holds answers about people's tokens) but still counts as
 *   an eviction, so an answer in flight is not kept.
 * - Every event bumps the cache's epoch: an Introspect answer fetched across it is used for its call
 *   but not cached (the revocation it raced with may be newer).
 * - When the stream drops, it reconnects after the last event's cursor (so nothing is missed), waiting
 *   50 ms, then twice as long each time up to 5 s, each wait jittered to 0.5-1.5x. Connecting with no
 *   cursor (the first time) clears the cache: what happened before is unknown.
 * - While the stream is down the cache falls back to its TTL: `up` is false, `fallbacks` counts the
 *   times that began, a warning is logged, and the 'down' event is emitted.
 */
import { EventEmitter } from "node:events";

import type { ClientReadableStream } from "@grpc/grpc-js";

import type { AuthClient } from "./client";
import { fromServiceError } from "./errors";
import { RevocationKind } from "./gen/auth/v1/auth";
import type { RevocationEvent, WatchRevocationsResponse } from "./gen/auth/v1/auth";
import type { IntrospectionCache } from "./gate";

/** Milliseconds: the first wait after the stream drops, and the longest. */
export const RECONNECT_BACKOFF_MS: readonly [number, number] = [50, 5000];

/** Where the guard's revocation messages go: Nest's Logger fits, and so does `console`. */
export interface RevocationLogger {
  log(message: string): void;
  warn(message: string): void;
}

export interface RevocationPushEvents {
  /** The stream is connected: cached answers are now dropped as revocations happen. */
  up: [];
  /** The stream is down (refused, dropped, unreachable): cached answers live out their TTL. */
  down: [error: unknown];
  /** One event applied: how many cached answers it dropped. */
  revocation: [event: RevocationEvent, dropped: number];
}

/**
 * What the guard knows of its revocation stream, and what it does with each event. Observe it with
 * `up`, `events`, `fallbacks`, `cursor`, or the events 'up', 'down' and 'revocation'.
 */
export class RevocationPush extends EventEmitter<RevocationPushEvents> {
  /** True while the stream is connected; false: the cache TTL alone bounds the revocation delay. */
  up = false;
  /** Revocation events received. */
  events = 0;
  /** Times the stream went down (or failed to come up at first) and the guard fell back to its TTL. */
  fallbacks = 0;
  /** The last event's cursor: the stream resumes after it. */
  cursor = "";

  constructor(
    readonly cache: IntrospectionCache,
    private readonly logger: RevocationLogger | undefined = undefined,
  ) {
    super();
  }

  connected(): void {
    // No cursor: the events of the time before are unknown, so nothing cached then can be trusted.
    if (!this.cursor) this.cache.clear();
    const was = this.up;
    this.up = true;
    if (!was) {
      this.logger?.log("revocation stream connected: cached answers are dropped as revocations happen");
      this.emit("up");
    }
  }

  down(error: unknown): void {
    const falling = this.up || this.fallbacks === 0; // not again for each failed reconnect
    this.up = false;
    if (falling) {
      const why = error instanceof Error ? error.message : String(error);
      this.logger?.warn(`revocation stream down (${why}): cached answers live out their TTL (${this.cache.ttlMs} ms) until it is back`);
      this.fallbacks++;
      this.emit("down", error);
    }
  }

  apply(event: RevocationEvent): number {
    let dropped: number;
    if (event.kind === RevocationKind.REVOCATION_KIND_SESSION_REVOKED && event.sessionId) {
      dropped = this.cache.evict({ sessionId: event.sessionId });
    } else if (event.userId) {
      dropped = this.cache.evict({ userId: event.userId }); // user-wide: every cached session of the user
    } else {
      // A service account's events (or one this version does not know without ids): nothing cached is
      // about it, but bump the epoch anyway so an answer in flight is not kept.
      dropped = this.cache.evict();
    }
    if (event.cursor) this.cursor = event.cursor;
    this.events++;
    this.emit("revocation", event, dropped);
    return dropped;
  }
}

/** Holds the stream open and reconnects after the last cursor, with backoff and jitter, until closed. */
export class RevocationWatcher {
  private stream: ClientReadableStream<WatchRevocationsResponse> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private waitMs = RECONNECT_BACKOFF_MS[0];
  private running = false;
  private stopped = false;

  constructor(
    private readonly client: AuthClient,
    readonly push: RevocationPush,
    private readonly random: () => number = Math.random,
  ) {}

  /** Opens the stream in the background (once); failures only mean falling back to the TTL. */
  start(): void {
    if (this.running || this.stopped) return;
    this.running = true;
    void this.connect();
  }

  close(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    if (this.client.closed) {
      this.stopped = true;
      return;
    }
    let stream: ClientReadableStream<WatchRevocationsResponse>;
    try {
      stream = await this.client.watchRevocations(this.push.cursor);
    } catch (failure) {
      this.dropped(fromServiceError(failure));
      return;
    }
    if (this.stopped) {
      stream.on("error", () => undefined);
      stream.cancel();
      return;
    }
    this.stream = stream;
    let finished = false;
    const finish = (error: unknown) => {
      if (finished) return;
      finished = true;
      if (this.stream === stream) this.stream = undefined;
      this.dropped(error);
    };
    // The server sends its headers once the stream is in place; a refusal comes as trailers alone
    // right after them, so wait a turn of the event loop before calling the stream up.
    stream.on("metadata", () =>
      setImmediate(() => {
        if (finished || this.stopped) return;
        this.push.connected();
        this.waitMs = RECONNECT_BACKOFF_MS[0];
      }),
    );
    stream.on("data", (response: WatchRevocationsResponse) => {
      if (!this.push.up && !finished && !this.stopped) {
        this.push.connected(); // an event before the headers were seen as "up": it is up
        this.waitMs = RECONNECT_BACKOFF_MS[0];
      }
      if (response.event !== undefined) this.push.apply(response.event);
    });
    stream.on("error", (error) => finish(fromServiceError(error)));
    stream.on("status", (status) => finish(`the stream ended (${status.code} ${status.details})`));
    stream.on("end", () => finish("the stream ended"));
  }

  private dropped(error: unknown): void {
    if (this.stopped) return;
    this.push.down(error);
    const delay = this.waitMs * (0.5 + this.random()); // jitter: guards cut off together come back apart
    this.waitMs = Math.min(this.waitMs * 2, RECONNECT_BACKOFF_MS[1]);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.connect();
    }, delay);
    this.timer.unref(); // a waiting reconnect alone does not keep the process alive
  }
}
