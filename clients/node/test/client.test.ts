import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { status as GrpcStatus } from "@grpc/grpc-js";
import type { ServerUnaryCall, sendUnaryData } from "@grpc/grpc-js";

import { AuthClient, AuthServiceError, DEFAULT_RETRY, NO_RETRY, RPCS, retryDelay } from "../src";
import { AdminServiceService } from "../src/gen/auth/v1/admin";
import { AuthServiceService, SignupResponse, VerifySignupResponse } from "../src/gen/auth/v1/auth";
import type { GetMeRequest } from "../src/gen/auth/v1/auth";
import { failure, fakeAuthServer } from "../testing/support";

describe("retryDelay", () => {
  const half = () => 0.5;
  it("retries only idempotent calls, only on UNAVAILABLE, at most maxAttempts", () => {
    assert.equal(retryDelay(DEFAULT_RETRY, true, GrpcStatus.UNAVAILABLE, 1, 5000, half), 75);
    assert.equal(retryDelay(DEFAULT_RETRY, true, GrpcStatus.UNAVAILABLE, 2, 5000, half), 150);
    assert.equal(retryDelay(DEFAULT_RETRY, true, GrpcStatus.UNAVAILABLE, 3, 5000, half), undefined);
    assert.equal(retryDelay(DEFAULT_RETRY, false, GrpcStatus.UNAVAILABLE, 1, 5000, half), undefined);
    assert.equal(retryDelay(DEFAULT_RETRY, true, GrpcStatus.DEADLINE_EXCEEDED, 1, 5000, half), undefined);
    assert.equal(retryDelay(NO_RETRY, true, GrpcStatus.UNAVAILABLE, 1, 5000, half), undefined);
  });

  it("keeps the backoff within [cap/2, cap], capped by maxBackoffMs, and never past the deadline", () => {
    const policy = { ...DEFAULT_RETRY, maxAttempts: 10 };
    assert.equal(retryDelay(policy, true, GrpcStatus.UNAVAILABLE, 8, 5000, () => 0), 500);
    assert.equal(retryDelay(policy, true, GrpcStatus.UNAVAILABLE, 8, 5000, () => 1), 1000);
    assert.equal(retryDelay(policy, true, GrpcStatus.UNAVAILABLE, 1, 60, half), undefined);
  });

  it("has one entry, and one AuthClient method, for every unary RPC of the contract", () => {
    // Streaming RPCs (WatchRevocations, for revocation push: not in this client yet) are not in RPCS.
    const contract = [...Object.values(AuthServiceService), ...Object.values(AdminServiceService)]
      .filter((m) => !m.requestStream && !m.responseStream)
      .map((m) => m.path)
      .sort();
    assert.deepEqual(Object.values(RPCS).map((rpc) => rpc.path).sort(), contract);
    for (const name of Object.keys(RPCS)) {
      assert.equal(typeof (AuthClient.prototype as unknown as Record<string, unknown>)[name], "function", name);
    }
  });

  it("marks exactly the calls the Python client retries as idempotent", () => {
    const idempotent = Object.entries(RPCS).filter(([, rpc]) => rpc.idempotent).map(([name]) => name).sort();
    assert.deepEqual(idempotent, ["getMe", "introspect", "issueServiceToken", "listAuditEvents", "listSessions", "listUsers", "setUserRole", "unlockUser", "updateMe"]);
  });
});

describe("AuthClient against an in-process gRPC server", () => {
  const attempts = { getMe: 0, login: 0, listSessions: 0, verifySignup: 0 };
  const seen: { authorization?: string; tenant?: string; device?: string } = {};
  let server: { address: string; stop: () => Promise<void> };
  let client: AuthClient;

  before(async () => {
    server = await fakeAuthServer({
      getMe: (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
        attempts.getMe++;
        seen.authorization = String(call.metadata.get("authorization")[0] ?? "");
        seen.tenant = String(call.metadata.get("x-tenant-id")[0] ?? "");
        seen.device = String(call.metadata.get("x-device-name")[0] ?? "");
        if (attempts.getMe < 3) callback(failure(GrpcStatus.UNAVAILABLE, "STORE_UNAVAILABLE", "store down"));
        else callback(null, { user: { id: "u1", username: "jane", role: 3 }, sessionId: "s1" });
      },
      login: (_call, callback) => {
        attempts.login++;
        callback(failure(GrpcStatus.UNAVAILABLE, "MAIL_UNAVAILABLE", "mail down"));
      },
      listSessions: () => {
        attempts.listSessions++; // never answers: the deadline must end the call
      },
      signup: (_call, callback) =>
        callback(null, SignupResponse.fromPartial({ signupId: "p1", expiresAt: new Date(Date.now() + 900_000), deliveryHint: "j***@example.com" })),
      verifySignup: (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
        attempts.verifySignup++;
        const { signupId, code } = call.request as { signupId: string; code: string };
        if (attempts.verifySignup === 1) callback(failure(GrpcStatus.UNAVAILABLE, "STORE_UNAVAILABLE", "store down"));
        else if (signupId === "p1" && code === "123456") callback(null, VerifySignupResponse.fromPartial({ user: { id: "u2", username: "jane", emailVerified: true } }));
        else callback(failure(GrpcStatus.UNAUTHENTICATED, "OTP_INVALID", "The code is not valid."));
      },
      logoutAll: (_call, callback) => callback(failure(GrpcStatus.UNAUTHENTICATED, "SESSION_REVOKED", "Log in again.")),
    });
    client = new AuthClient(server.address, { tenant: "acme", timeoutMs: 3000 });
  });

  after(async () => {
    client.close();
    await server.stop();
  });

  it("retries an idempotent call on UNAVAILABLE and sends token, tenant and headers", async () => {
    const me = await client.withToken("tok-1").getMe({ headers: { "X-Device-Name": "CI" } });
    assert.equal(me.user?.username, "jane");
    assert.equal(attempts.getMe, 3);
    assert.deepEqual(seen, { authorization: "Bearer tok-1", tenant: "acme", device: "CI" });
  });

  it("never retries a call that is not safe to repeat", async () => {
    await assert.rejects(client.login({ usernameOrEmail: "jane", password: "pw" }), (error: unknown) => {
      assert.ok(error instanceof AuthServiceError);
      assert.equal(error.code, GrpcStatus.UNAVAILABLE);
      assert.equal(error.reason, "MAIL_UNAVAILABLE");
      return true;
    });
    assert.equal(attempts.login, 1);
  });

  it("signs up in two steps, and never resends the single-use code", async () => {
    const started = await client.signup({ username: "jane", email: "jane@example.com", password: "pw" });
    assert.equal(started.signupId, "p1");
    assert.equal(started.deliveryHint, "j***@example.com");
    await assert.rejects(client.verifySignup({ signupId: "p1", code: "123456" }), (error: unknown) => {
      assert.ok(error instanceof AuthServiceError);
      assert.equal(error.code, GrpcStatus.UNAVAILABLE);
      return true;
    });
    assert.equal(attempts.verifySignup, 1);
    const { user } = await client.verifySignup({ signupId: started.signupId, code: "123456" });
    assert.equal(user?.username, "jane");
    assert.equal(user?.emailVerified, true);
    await assert.rejects(client.verifySignup({ signupId: "p1", code: "000000" }), { reason: "OTP_INVALID" });
  });

  it("gives every call a deadline", async () => {
    const started = Date.now();
    await assert.rejects(client.listSessions({ timeoutMs: 200 }), (error: unknown) => {
      assert.ok(error instanceof AuthServiceError);
      assert.equal(error.code, GrpcStatus.DEADLINE_EXCEEDED);
      return true;
    });
    const took = Date.now() - started;
    assert.ok(took >= 150 && took < 2000, `took ${took} ms`);
  });

  it("rejects with the server's code and ErrorInfo reason; per-call token wins over the bound one", async () => {
    await assert.rejects(client.withToken("bound").logoutAll({ keepCurrent: true }, { token: "per-call" }), (error: unknown) => {
      assert.ok(error instanceof AuthServiceError);
      assert.equal(error.status, "UNAUTHENTICATED");
      assert.equal(error.reason, "SESSION_REVOKED");
      assert.equal(error.domain, "auth.v1");
      return true;
    });
  });

  it("cancels a call through its AbortSignal", async () => {
    const abort = new AbortController();
    const call = client.listSessions({ signal: abort.signal, timeoutMs: 5000 });
    setTimeout(() => abort.abort(), 50);
    await assert.rejects(call, (error: unknown) => error instanceof AuthServiceError && error.code === GrpcStatus.CANCELLED);
  });

  it("a connection failure is UNAVAILABLE without a reason, and retried within the deadline", async () => {
    const dead = new AuthClient("127.0.0.1:1", { timeoutMs: 2000 });
    try {
      await assert.rejects(dead.getMe(), (error: unknown) => error instanceof AuthServiceError && error.code === GrpcStatus.UNAVAILABLE && error.reason === "");
    } finally {
      dead.close();
    }
  });

  it("refuses a call without a deadline", () => {
    assert.throws(() => new AuthClient("127.0.0.1:1", { timeoutMs: 0 }), RangeError);
    const request: GetMeRequest = {};
    assert.ok(request);
  });
});
