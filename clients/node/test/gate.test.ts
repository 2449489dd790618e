import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { status as GrpcStatus } from "@grpc/grpc-js";

import { AuthGate, AuthServiceError, IntrospectionCache, Role, bearerToken } from "../src";
import type { AuthClient, CallOptions, IntrospectResponse } from "../src";
import type { IntrospectRequest, User } from "../src/gen/auth/v1/auth";
import type { DeepPartial } from "../src";

const HOUR = 3600_000;

function user(role: Role = Role.ROLE_USER): User {
  return { id: "u1", username: "jane", email: "jane@example.com", name: "", phone: "", role, locked: false, createdAt: undefined, tenantId: "acme", emailVerified: false };
}

function live(role: Role = Role.ROLE_USER, expiresAt = new Date(Date.now() + HOUR)): IntrospectResponse {
  return { active: true, user: user(role), sessionId: "s1", tenantId: "acme", expiresAt, inactiveReason: "", serviceAccount: undefined };
}

function dead(reason: string): IntrospectResponse {
  return { active: false, user: undefined, sessionId: "", tenantId: "", expiresAt: undefined, inactiveReason: reason, serviceAccount: undefined };
}

/** An AuthClient stand-in: answers Introspect from `answer`, counting calls. */
function fakeClient(answer: (token: string, tenant: string | undefined) => Promise<IntrospectResponse>) {
  const calls: { token: string; tenant: string | undefined; timeoutMs: number | undefined }[] = [];
  const client = {
    introspect(request: DeepPartial<IntrospectRequest>, options?: CallOptions) {
      calls.push({ token: request.accessToken ?? "", tenant: options?.tenant, timeoutMs: options?.timeoutMs });
      return answer(request.accessToken ?? "", options?.tenant);
    },
  };
  return { client: client as unknown as AuthClient, calls };
}

async function denied(promise: Promise<unknown>): Promise<AuthServiceError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof AuthServiceError, String(error));
    return error;
  }
  assert.fail("expected a denial");
}

describe("bearerToken", () => {
  it("takes 'Bearer <token>' in any case, refuses anything else", () => {
    assert.equal(bearerToken("Bearer abc.def"), "abc.def");
    assert.equal(bearerToken("bearer  abc "), "abc");
    assert.equal(bearerToken(["Bearer abc"]), "abc");
    for (const missing of [undefined, "", [], ["  "]]) {
      assert.throws(() => bearerToken(missing), (e: AuthServiceError) => e.reason === "TOKEN_MISSING");
    }
    for (const bad of ["Basic abc", "Bearer", "Bearer a b", "abc", ["Bearer a", "Bearer b"]]) {
      assert.throws(() => bearerToken(bad), (e: AuthServiceError) => e.reason === "TOKEN_INVALID" && e.code === GrpcStatus.UNAUTHENTICATED);
    }
  });
});

describe("IntrospectionCache", () => {
  it("expires answers after the TTL, never past the token's expiry, and evicts the least recently used", () => {
    let now = 0;
    const wall = 1_000_000;
    const cache = new IntrospectionCache(5000, 2, () => now, () => wall);
    const a = IntrospectionCache.key("acme", "a");
    cache.put(a, live(Role.ROLE_USER, new Date(wall + HOUR)));
    now = 4999;
    assert.ok(cache.get(a));
    now = 5000;
    assert.equal(cache.get(a), undefined);

    const soon = IntrospectionCache.key("acme", "soon");
    cache.put(soon, live(Role.ROLE_USER, new Date(wall + 1000)));
    now += 1000;
    assert.equal(cache.get(soon), undefined, "kept past the token's own expiry");
    cache.put(IntrospectionCache.key("acme", "expired"), live(Role.ROLE_USER, new Date(wall - 1)));
    assert.equal(cache.size, 0);

    const [k1, k2, k3] = ["1", "2", "3"].map((t) => IntrospectionCache.key(undefined, t));
    cache.put(k1!, dead("SESSION_REVOKED"));
    cache.put(k2!, dead("SESSION_REVOKED"));
    assert.ok(cache.get(k1!)); // k1 is now the most recently used
    cache.put(k3!, dead("SESSION_REVOKED"));
    assert.ok(cache.get(k1!));
    assert.equal(cache.get(k2!), undefined);
    assert.equal(cache.size, 2);
  });

  it("keys by tenant and a hash of the token, never the token itself", () => {
    const key = IntrospectionCache.key("acme", "secret-token");
    assert.ok(!key.includes("secret-token"));
    assert.notEqual(key, IntrospectionCache.key("other", "secret-token"));
    assert.notEqual(key, IntrospectionCache.key(undefined, "secret-token"));
  });

  it("with a TTL of 0 keeps nothing", () => {
    const cache = new IntrospectionCache(0);
    cache.put("k", live());
    assert.equal(cache.size, 0);
  });
});

describe("AuthGate", () => {
  it("gives the live user with a lower-case role, and checks roles against it", async () => {
    const { client, calls } = fakeClient(async () => live(Role.ROLE_MANAGER));
    const gate = new AuthGate(client, { introspectTimeoutMs: 1234 });
    assert.deepEqual(await gate.authenticate("t", "acme", ["manager", "admin"]), {
      id: "u1",
      username: "jane",
      email: "jane@example.com",
      role: "manager",
      tenantId: "acme",
      sessionId: "s1",
    });
    const error = await denied(gate.authenticate("t", "acme", ["admin"]));
    assert.equal(error.code, GrpcStatus.PERMISSION_DENIED);
    assert.equal(error.reason, "INSUFFICIENT_ROLE");
    assert.equal(calls.length, 1, "the second check used the cached answer");
    assert.deepEqual(calls[0], { token: "t", tenant: "acme", timeoutMs: 1234 });
  });

  it("answers an inactive token with the auth service's reason", async () => {
    const { client } = fakeClient(async (token) => dead(token === "old" ? "TOKEN_EXPIRED" : "SESSION_REVOKED"));
    const gate = new AuthGate(client);
    assert.equal((await denied(gate.authenticate("old", undefined))).reason, "TOKEN_EXPIRED");
    const revoked = await denied(gate.authenticate("gone", undefined));
    assert.equal(revoked.reason, "SESSION_REVOKED");
    assert.equal(revoked.code, GrpcStatus.UNAUTHENTICATED);
    assert.equal(revoked.domain, "auth.v1");
  });

  it("sees a revocation once the TTL has passed, not before", async () => {
    let now = 0;
    let revoked = false;
    const { client, calls } = fakeClient(async () => (revoked ? dead("SESSION_REVOKED") : live()));
    const gate = new AuthGate(client, { cacheTtlMs: 500, clock: () => now });
    await gate.authenticate("t", undefined);
    revoked = true;
    now = 499;
    await gate.authenticate("t", undefined);
    now = 500;
    assert.equal((await denied(gate.authenticate("t", undefined))).reason, "SESSION_REVOKED");
    assert.equal(calls.length, 2);
  });

  it("with cacheTtlMs 0 introspects every call", async () => {
    const { client, calls } = fakeClient(async () => live());
    const gate = new AuthGate(client, { cacheTtlMs: 0 });
    await gate.authenticate("t", undefined);
    await gate.authenticate("t", undefined);
    assert.equal(calls.length, 2);
  });

  it("shares one Introspect between concurrent calls with the same token", async () => {
    let release: (answer: IntrospectResponse) => void = () => undefined;
    const { client, calls } = fakeClient(() => new Promise((resolve) => (release = resolve)));
    const gate = new AuthGate(client);
    const both = Promise.all([gate.authenticate("t", "acme"), gate.authenticate("t", "acme")]);
    release(live());
    const [first, second] = await both;
    assert.equal(first.id, second.id);
    assert.equal(calls.length, 1);
  });

  it("fails closed when the auth service cannot answer, and does not cache the failure", async () => {
    let up = false;
    const errors: AuthServiceError[] = [];
    const { client } = fakeClient(async () => {
      if (!up) throw new AuthServiceError(GrpcStatus.UNAVAILABLE, "", "connect ECONNREFUSED");
      return live();
    });
    const gate = new AuthGate(client, { onIntrospectError: (e) => errors.push(e) });
    const error = await denied(gate.authenticate("t", undefined));
    assert.equal(error.code, GrpcStatus.UNAVAILABLE);
    assert.equal(error.reason, "AUTH_SERVICE_UNAVAILABLE");
    assert.equal(errors.length, 1);
    up = true;
    assert.equal((await gate.authenticate("t", undefined)).id, "u1");
  });

  it("passes a tenant mistake on as the auth service answered it", async () => {
    const { client } = fakeClient(async () => {
      throw new AuthServiceError(GrpcStatus.NOT_FOUND, "TENANT_NOT_FOUND", "No such tenant.", { domain: "auth.v1" });
    });
    const error = await denied(new AuthGate(client).authenticate("t", "nope"));
    assert.equal(error.code, GrpcStatus.NOT_FOUND);
    assert.equal(error.reason, "TENANT_NOT_FOUND");
  });

  it("an unexpected error is a failure of the auth service, never a pass", async () => {
    const { client } = fakeClient(async () => {
      throw new TypeError("bug");
    });
    const error = await denied(new AuthGate(client).authenticate("t", undefined));
    assert.equal(error.reason, "AUTH_SERVICE_UNAVAILABLE");
  });
});
