import "reflect-metadata";

import assert from "node:assert/strict";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";

import { Metadata, status as GrpcStatus } from "@grpc/grpc-js";
import type { ServerUnaryCall, ServerWritableStream } from "@grpc/grpc-js";
import { Test } from "@nestjs/testing";

import { AuthClient, AuthGate, AuthModule, IntrospectionCache, RECONNECT_BACKOFF_MS, RevocationKind, RevocationPush, Role } from "../src";
import type { IntrospectRequest, IntrospectResponse, RevocationEvent, WatchRevocationsRequest } from "../src/gen/auth/v1/auth";
import { failure, fakeAuthServer } from "../testing/support";

const CREDENTIALS = { clientId: "svc_gateway", clientSecret: "s3cret" };
const HOUR = 3600_000;

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

async function waitFor(what: string, check: () => boolean, withinMs = 3000): Promise<void> {
  const started = Date.now();
  while (!check()) {
    assert.ok(Date.now() - started < withinMs, `${what}: not within ${withinMs} ms`);
    await sleep(5);
  }
}

function answer(sessionId: string, userId: string): IntrospectResponse {
  return {
    active: true,
    user: { id: userId, username: userId, email: `${userId}@example.com`, name: "", phone: "", role: Role.ROLE_USER, locked: false, createdAt: undefined, tenantId: "acme", emailVerified: false, inactiveReason: "" },
    sessionId,
    tenantId: "acme",
    expiresAt: new Date(Date.now() + HOUR),
    inactiveReason: "",
    serviceAccount: undefined,
  } as IntrospectResponse;
}

function event(cursor: string, kind: RevocationKind, ids: { sessionId?: string; userId?: string; serviceAccountId?: string }): RevocationEvent {
  return { cursor, kind, at: new Date(), sessionId: ids.sessionId ?? "", userId: ids.userId ?? "", serviceAccountId: ids.serviceAccountId ?? "" };
}

describe("IntrospectionCache eviction", () => {
  it("drops by session, or every entry of a user, and bumps the epoch each time", () => {
    const cache = new IntrospectionCache(5000);
    cache.put("a", answer("s1", "u1"));
    cache.put("b", answer("s2", "u1"));
    cache.put("c", answer("s3", "u2"));
    const epoch = cache.epoch;
    assert.equal(cache.evict({ sessionId: "s1" }), 1);
    assert.equal(cache.get("a"), undefined);
    assert.ok(cache.get("b") && cache.get("c"));
    assert.equal(cache.evict({ userId: "u1" }), 1);
    assert.equal(cache.get("b"), undefined);
    assert.equal(cache.evict(), 0, "no ids: nothing dropped");
    assert.ok(cache.get("c"));
    assert.equal(cache.epoch, epoch + 3);
  });

  it("does not keep an answer fetched across an eviction (epoch changed)", () => {
    const cache = new IntrospectionCache(5000);
    const epoch = cache.epoch;
    cache.evict({ sessionId: "elsewhere" });
    cache.put("a", answer("s1", "u1"), epoch);
    assert.equal(cache.size, 0);
    cache.put("a", answer("s1", "u1"), cache.epoch);
    assert.equal(cache.size, 1);
  });
});

describe("RevocationPush", () => {
  it("applies the Python guard's rules: session, user-wide kinds, service accounts", () => {
    const cache = new IntrospectionCache(5000);
    const push = new RevocationPush(cache);
    const seen: number[] = [];
    push.on("revocation", (_event, dropped) => seen.push(dropped));
    cache.put("a", answer("s1", "u1"));
    cache.put("b", answer("s2", "u1"));
    cache.put("c", answer("s3", "u2"));
    cache.put("d", answer("s4", "u3"));
    cache.put("e", answer("s5", "u4"));
    push.apply(event("1", RevocationKind.REVOCATION_KIND_SESSION_REVOKED, { sessionId: "s1", userId: "u1" })); // only that session
    push.apply(event("2", RevocationKind.REVOCATION_KIND_SERVICE_ACCOUNT_ROTATED, { serviceAccountId: "sa1" }));
    push.apply(event("3", RevocationKind.REVOCATION_KIND_PASSWORD_CHANGED, { userId: "u1" }));
    push.apply(event("4", RevocationKind.REVOCATION_KIND_ROLE_CHANGED, { userId: "u2" }));
    push.apply(event("5", RevocationKind.REVOCATION_KIND_USER_LOCKED, { userId: "u3" }));
    assert.deepEqual(seen, [1, 0, 1, 1, 1]);
    assert.deepEqual([..."abcde"].map((k) => cache.get(k) !== undefined), [false, false, false, false, true]);
    assert.equal(push.events, 5);
    assert.equal(push.cursor, "5");
  });

  it("reports up and down, counting and logging each fall back to the TTL once", () => {
    const cache = new IntrospectionCache(5000);
    const logged: string[] = [];
    const push = new RevocationPush(cache, { log: (m) => logged.push(`log ${m}`), warn: (m) => logged.push(`warn ${m}`) });
    const changes: string[] = [];
    push.on("up", () => changes.push("up"));
    push.on("down", () => changes.push("down"));
    push.down("refused"); // never up: the first failure still says so
    push.down("refused again"); // still down: not again
    cache.put("a", answer("s1", "u1"));
    push.connected(); // no cursor yet: the cache is cleared
    assert.equal(cache.size, 0);
    push.apply(event("7", RevocationKind.REVOCATION_KIND_SESSION_REVOKED, { sessionId: "s9" }));
    push.down("dropped");
    cache.put("a", answer("s1", "u1"));
    push.connected(); // with a cursor: resumes, nothing cleared
    assert.equal(cache.size, 1);
    assert.deepEqual(changes, ["down", "up", "down", "up"]);
    assert.equal(push.fallbacks, 2);
    assert.equal(push.up, true);
    assert.equal(logged.filter((m) => m.startsWith("warn")).length, 2);
    assert.match(logged[0] ?? "", /^warn revocation stream down \(refused\): cached answers live out their TTL \(5000 ms\)/);
  });
});

describe("AuthGate with serviceCredentials: revocation push from an in-process gRPC server", () => {
  let server: { address: string; stop: () => Promise<void> };
  let streams: { request: WatchRevocationsRequest; authorization: string; tenant: string; call: ServerWritableStream<unknown, unknown> }[] = [];
  let refuseStreams: ReturnType<typeof failure> | undefined;
  let introspected: string[] = [];
  let introspectDelayMs = 0;
  let issued = 0;
  let client: AuthClient;
  let gate: AuthGate;
  let logged: string[] = [];
  const sessions: Record<string, IntrospectResponse> = {
    alice1: answer("s1", "alice"),
    alice2: answer("s2", "alice"),
    bob: answer("s3", "bob"),
  };

  before(async () => {
    server = await fakeAuthServer({
      issueServiceToken: (_call, callback) => {
        issued++;
        callback(null, { accessToken: `svc-${issued}`, expiresAt: new Date(Date.now() + HOUR) });
      },
      introspect: (call: ServerUnaryCall<unknown, unknown>, callback) => {
        const token = (call.request as IntrospectRequest).accessToken;
        introspected.push(token);
        setTimeout(() => callback(null, sessions[token] ?? { active: false, inactiveReason: "TOKEN_INVALID" }), introspectDelayMs);
      },
      watchRevocations: (call) => {
        if (refuseStreams) {
          call.emit("error", refuseStreams);
          return;
        }
        streams.push({
          request: call.request as WatchRevocationsRequest,
          authorization: String(call.metadata.get("authorization")[0] ?? ""),
          tenant: String(call.metadata.get("x-tenant-id")[0] ?? ""),
          call,
        });
        call.sendMetadata(new Metadata()); // headers now, as the auth service sends them once the stream is in place
      },
    });
  });

  beforeEach(() => {
    streams = [];
    refuseStreams = undefined;
    introspected = [];
    introspectDelayMs = 0;
    issued = 0;
    logged = [];
    client = new AuthClient(server.address, { tenant: "acme", timeoutMs: 3000, serviceCredentials: CREDENTIALS });
    gate = new AuthGate(client, { logger: { log: (m) => logged.push(`log ${m}`), warn: (m) => logged.push(`warn ${m}`) } });
  });

  afterEach(() => {
    gate.close();
    client.close();
  });

  after(async () => {
    await server.stop();
  });

  const send = (e: RevocationEvent) => streams.at(-1)?.call.write({ event: e });

  async function connected(): Promise<void> {
    gate.start();
    await waitFor("the stream up", () => gate.revocations.up);
  }

  async function revoked(e: RevocationEvent): Promise<void> {
    const before = gate.revocations.events;
    send(e);
    await waitFor("the event applied", () => gate.revocations.events > before);
  }

  it("subscribes with this service's token in the client's tenant, from now (no cursor)", async () => {
    await connected();
    assert.equal(streams.length, 1);
    assert.deepEqual({ ...streams[0]?.request }, { after: "" });
    assert.equal(streams[0]?.authorization, "Bearer svc-1");
    assert.equal(streams[0]?.tenant, "acme");
    assert.deepEqual(logged, ["log revocation stream connected: cached answers are dropped as revocations happen"]);
  });

  it("evicts the revoked session at once, and every session of a user on a user-wide event", async () => {
    await connected();
    for (const token of ["alice1", "alice2", "bob"]) await gate.authenticate(token, undefined);
    for (const token of ["alice1", "alice2", "bob"]) await gate.authenticate(token, undefined);
    assert.deepEqual(introspected, ["alice1", "alice2", "bob"], "all three cached");

    await revoked(event("c1", RevocationKind.REVOCATION_KIND_SESSION_REVOKED, { sessionId: "s1", userId: "alice" }));
    for (const token of ["alice1", "alice2", "bob"]) await gate.authenticate(token, undefined);
    assert.deepEqual(introspected.slice(3), ["alice1"], "only the revoked session is asked again");

    await revoked(event("c2", RevocationKind.REVOCATION_KIND_USER_LOCKED, { userId: "alice" }));
    for (const token of ["alice1", "alice2", "bob"]) await gate.authenticate(token, undefined);
    assert.deepEqual(introspected.slice(4), ["alice1", "alice2"], "every session of the user, not bob's");
    assert.equal(gate.revocations.cursor, "c2");
  });

  it("uses but does not cache an answer in flight when an eviction happens meanwhile", async () => {
    await connected();
    introspectDelayMs = 200;
    const pending = gate.authenticate("bob", undefined);
    await waitFor("the Introspect call", () => introspected.length === 1);
    await revoked(event("c1", RevocationKind.REVOCATION_KIND_ROLE_CHANGED, { userId: "carol" })); // any eviction
    assert.equal((await pending).id, "bob");
    introspectDelayMs = 0;
    await gate.authenticate("bob", undefined);
    assert.equal(introspected.length, 2, "not kept: asked again");
    await gate.authenticate("bob", undefined);
    assert.equal(introspected.length, 2, "the second answer is kept");
  });

  it("reconnects after the last cursor with backoff when the stream drops, keeping the cache", async () => {
    await connected();
    await gate.authenticate("bob", undefined);
    await revoked(event("c7", RevocationKind.REVOCATION_KIND_SESSION_REVOKED, { sessionId: "elsewhere" }));
    const downs: unknown[] = [];
    gate.revocations.on("down", (error) => downs.push(error));
    streams[0]?.call.emit("error", failure(GrpcStatus.UNAVAILABLE, "", "server shutting down"));
    await waitFor("down", () => downs.length === 1);
    assert.equal(gate.revocations.up, false);
    assert.equal(gate.revocations.fallbacks, 1);
    const dropped = Date.now();
    await waitFor("reconnected", () => gate.revocations.up);
    const took = Date.now() - dropped;
    assert.ok(took >= RECONNECT_BACKOFF_MS[0] * 0.5 - 5, `waited ${took} ms`);
    assert.equal(streams.length, 2);
    assert.equal(streams[1]?.request.after, "c7", "resumes after the last event");
    await gate.authenticate("bob", undefined);
    assert.equal(introspected.length, 1, "a reconnect with a cursor keeps the cache");
    assert.ok(logged.some((m) => /^warn revocation stream down \(.*server shutting down.*\): cached answers live out their TTL \(5000 ms\)/.test(m)), logged.join("\n"));
  });

  it("falls back to the TTL while the stream is refused, says so, and keeps retrying with growing waits", async () => {
    refuseStreams = failure(GrpcStatus.UNAVAILABLE, "", "no streams now");
    gate.start();
    await waitFor("down", () => gate.revocations.fallbacks === 1);
    assert.equal(gate.revocations.up, false);
    await gate.authenticate("bob", undefined);
    await gate.authenticate("bob", undefined);
    assert.equal(introspected.length, 1, "the cache still answers, within its TTL");
    assert.ok(logged.some((m) => m.startsWith("warn revocation stream down")));
    await sleep(400); // 50, 100, 200 ms waits (jittered): a few attempts, not hundreds
    refuseStreams = undefined;
    await waitFor("up once the server accepts", () => gate.revocations.up, 5000);
    assert.equal(gate.revocations.fallbacks, 1, "one fall back, however many attempts");
    assert.equal(logged.filter((m) => m.startsWith("warn")).length, 1);
  });

  it("a refused service token on the stream makes the next stream ask for a new one", async () => {
    refuseStreams = failure(GrpcStatus.UNAUTHENTICATED, "SERVICE_ACCOUNT_REVOKED", "rotated");
    gate.start();
    await waitFor("down", () => gate.revocations.fallbacks === 1);
    refuseStreams = undefined;
    await waitFor("up", () => gate.revocations.up, 5000);
    assert.ok(issued >= 2, `IssueServiceToken called ${issued} times`);
    assert.equal(streams.at(-1)?.authorization, `Bearer svc-${issued}`);
  });

  it("close() ends the stream and no reconnect follows; without serviceCredentials or with watchRevocations: false, no stream", async () => {
    await connected();
    gate.close();
    await sleep(150);
    assert.equal(streams.length, 1);
    const plain = new AuthClient(server.address, { tenant: "acme" });
    const off = new AuthGate(client, { watchRevocations: false });
    try {
      const bare = new AuthGate(plain);
      bare.start();
      off.start();
      await off.authenticate("bob", undefined);
      await sleep(100);
      assert.equal(streams.length, 1);
      assert.equal(bare.revocations.up, false);
    } finally {
      off.close();
      plain.close();
    }
  });

  it("AuthModule opens the stream at start-up and closes it with the app", async () => {
    const app = await Test.createTestingModule({
      imports: [AuthModule.forRoot({ address: server.address, tenant: "acme", serviceCredentials: CREDENTIALS })],
    }).compile();
    const moduleGate = app.get(AuthGate);
    try {
      await app.init();
      await waitFor("the module's stream up", () => moduleGate.revocations.up);
      await moduleGate.authenticate("bob", undefined);
      await revoked2(streams, event("m1", RevocationKind.REVOCATION_KIND_SESSION_REVOKED, { sessionId: "s3" }), moduleGate);
      await moduleGate.authenticate("bob", undefined);
      assert.deepEqual(introspected, ["bob", "bob"]);
    } finally {
      await app.close();
    }
    await sleep(100);
    assert.equal(moduleGate.revocations.up, true, "closed, not dropped: no fall back reported");
    assert.equal(streams.length, 1);
  });
});

async function revoked2(
  streams: { call: ServerWritableStream<unknown, unknown> }[],
  e: RevocationEvent,
  gate: AuthGate,
): Promise<void> {
  const before = gate.revocations.events;
  streams.at(-1)?.call.write({ event: e });
  await waitFor("the event applied", () => gate.revocations.events > before);
}
