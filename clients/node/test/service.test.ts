import "reflect-metadata";

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";

import { status as GrpcStatus } from "@grpc/grpc-js";
import type { ServerUnaryCall, sendUnaryData } from "@grpc/grpc-js";
import { Test } from "@nestjs/testing";

import {
  AuthClient,
  AuthGate,
  AuthModule,
  AuthServiceError,
  RPCS,
  SERVICE_TOKEN_MARGIN_MS,
  ServiceTokenError,
  serviceTokenUseFor,
} from "../src";
import { AuthServiceService } from "../src/gen/auth/v1/auth";
import type { IntrospectResponse, IssueServiceTokenRequest } from "../src/gen/auth/v1/auth";
import { failure, fakeAuthServer } from "../testing/support";

const CREDENTIALS = { clientId: "svc_gateway", clientSecret: "s3cret" };
const MINUTE = 60_000;

function authorization(call: ServerUnaryCall<unknown, unknown>): string {
  return String(call.metadata.get("authorization")[0] ?? "");
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** The unary RPCs whose (auth.v1.access) rule admits services and not people, read from protos/auth/v1. */
function serviceOnlyInProtos(): string[] {
  let dir = __dirname;
  while (!existsSync(join(dir, "protos", "auth", "v1"))) {
    const up = dirname(dir);
    assert.notEqual(up, dir, "protos/auth/v1 not found above the tests");
    dir = up;
  }
  const found: string[] = [];
  for (const file of ["auth.proto", "admin.proto"]) {
    const text = readFileSync(join(dir, "protos", "auth", "v1", file), "utf8");
    const service = /\bservice\s+(\w+)/.exec(text)?.[1];
    for (const match of text.matchAll(/\brpc\s+(\w+)\s*\(([^)]*)\)\s*returns\s*\(([^)]*)\)\s*\{([\s\S]*?)\n {2}\}/g)) {
      if (/\bstream\s/.test(`${match[2]} ${match[3]} `)) continue; // streaming (WatchRevocations): not in RPCS
      const rule = /option\s+\(auth\.v1\.access\)\s*=\s*\{([\s\S]*?)\};/.exec(match[4] ?? "")?.[1] ?? "";
      const services = /\bservices\s*:/.test(rule);
      const people = /\b(authenticated|public)\s*:\s*true\b/.test(rule) || /\broles\s*:/.test(rule);
      if (services && !people) found.push(`/auth.v1.${service}/${match[1]}`);
    }
  }
  return found.sort();
}

describe("service token: the table and the renewal time", () => {
  it("marks exactly the RPCs whose access rule admits services but not people as serviceOnly", () => {
    const marked = Object.values(RPCS).filter((rpc) => rpc.serviceOnly).map((rpc) => rpc.path).sort();
    assert.deepEqual(marked, serviceOnlyInProtos());
    assert.deepEqual(marked, [AuthServiceService.introspect.path]);
  });

  it("renews a minute before expiry, or at half its life when that is shorter", () => {
    assert.equal(SERVICE_TOKEN_MARGIN_MS, MINUTE);
    assert.equal(serviceTokenUseFor(15 * MINUTE), 14 * MINUTE);
    assert.equal(serviceTokenUseFor(2 * MINUTE), MINUTE);
    assert.equal(serviceTokenUseFor(MINUTE), MINUTE / 2);
    assert.equal(serviceTokenUseFor(400), 200);
    assert.equal(serviceTokenUseFor(-5), 0);
  });

  it("refuses incomplete credentials when the client is made", () => {
    assert.throws(() => new AuthClient("127.0.0.1:1", { serviceCredentials: { clientId: "", clientSecret: "x" } }), TypeError);
    assert.throws(() => new AuthClient("127.0.0.1:1", { serviceCredentials: { clientId: "x", clientSecret: "" } }), TypeError);
  });
});

describe("AuthClient with serviceCredentials against an in-process gRPC server", () => {
  // Per-test behaviour of the fake auth service.
  let lifetimeMs = 15 * MINUTE;
  let issueDelayMs = 0;
  let issueFailure: ReturnType<typeof failure> | undefined;
  let refused = new Set<string>();
  let issued: IssueServiceTokenRequest[] = [];
  let issueAuthorization: string[] = [];
  let introspectAuthorization: string[] = [];
  let getMeAuthorization: string[] = [];
  let server: { address: string; stop: () => Promise<void> };
  let client: AuthClient;

  const live: Partial<IntrospectResponse> = { active: true, sessionId: "s1", tenantId: "acme", user: { id: "u1", username: "jane", role: 1 } as never };

  before(async () => {
    server = await fakeAuthServer({
      issueServiceToken: (call, callback: sendUnaryData<unknown>) => {
        issued.push(call.request as IssueServiceTokenRequest);
        issueAuthorization.push(authorization(call));
        const n = issued.length;
        setTimeout(() => {
          if (issueFailure) callback(issueFailure);
          else callback(null, { accessToken: `svc-${n}`, expiresAt: new Date(Date.now() + lifetimeMs) });
        }, issueDelayMs);
      },
      introspect: (call, callback) => {
        const sent = authorization(call);
        introspectAuthorization.push(sent);
        if (refused.has(sent.replace(/^Bearer /, ""))) {
          callback(failure(GrpcStatus.UNAUTHENTICATED, "TOKEN_INVALID", "The service token is not valid."));
        } else if (!sent.startsWith("Bearer svc-") && !sent.startsWith("Bearer own")) {
          callback(failure(GrpcStatus.PERMISSION_DENIED, "CALLER_NOT_ALLOWED", "Introspect is for services."));
        } else {
          callback(null, live);
        }
      },
      getMe: (call, callback) => {
        getMeAuthorization.push(authorization(call));
        callback(null, { user: { id: "u1", username: "jane", role: 1 }, sessionId: "s1" });
      },
    });
  });

  beforeEach(() => {
    lifetimeMs = 15 * MINUTE;
    issueDelayMs = 0;
    issueFailure = undefined;
    refused = new Set();
    issued = [];
    issueAuthorization = [];
    introspectAuthorization = [];
    getMeAuthorization = [];
    client = new AuthClient(server.address, { tenant: "acme", timeoutMs: 3000, serviceCredentials: CREDENTIALS });
  });

  after(async () => {
    client.close();
    await server.stop();
  });

  it("gets a service token once, sends it on Introspect, and keeps using it while it is fresh", async () => {
    assert.equal((await client.introspect({ accessToken: "user-token" })).active, true);
    await client.introspect({ accessToken: "user-token" });
    await client.withTenant("other").introspect({ accessToken: "user-token" }); // bound copies share the token
    assert.deepEqual(issued, [CREDENTIALS]);
    assert.deepEqual(issueAuthorization, [""], "IssueServiceToken carries no bearer token");
    assert.deepEqual(introspectAuthorization, ["Bearer svc-1", "Bearer svc-1", "Bearer svc-1"]);
    assert.equal(await client.serviceToken(), "svc-1");
  });

  it("renews the token when it is due (half its life, for a short-lived one)", async () => {
    lifetimeMs = 1200; // used for 600 ms
    await client.introspect({ accessToken: "t" });
    await client.introspect({ accessToken: "t" });
    assert.equal(issued.length, 1);
    await sleep(700);
    await client.introspect({ accessToken: "t" });
    assert.equal(issued.length, 2);
    assert.deepEqual(introspectAuthorization, ["Bearer svc-1", "Bearer svc-1", "Bearer svc-2"]);
  });

  it("coalesces concurrent renewals into one IssueServiceToken", async () => {
    issueDelayMs = 100;
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => client.introspect({ accessToken: `t${i % 3}` })));
    assert.equal(answers.length, 20);
    assert.equal(issued.length, 1);
    assert.ok(introspectAuthorization.every((sent) => sent === "Bearer svc-1"), introspectAuthorization.join());
  });

  it("asks for a new token once when the server refuses the cached one, then succeeds", async () => {
    await client.introspect({ accessToken: "t" });
    refused.add("svc-1"); // e.g. the secret was rotated and the overlap ended
    const [a, b] = await Promise.all([client.introspect({ accessToken: "t" }), client.introspect({ accessToken: "t" })]);
    assert.equal(a.active && b.active, true);
    assert.equal(issued.length, 2, "both refused calls share one new token");
    assert.deepEqual(introspectAuthorization.slice(-2), ["Bearer svc-2", "Bearer svc-2"]);
  });

  it("retries only once: a second refusal is the caller's answer, as an AuthServiceError", async () => {
    refused = new Set(["svc-1", "svc-2", "svc-3"]);
    await assert.rejects(client.introspect({ accessToken: "t" }), (error: unknown) => {
      assert.ok(error instanceof AuthServiceError);
      assert.equal(error.code, GrpcStatus.UNAUTHENTICATED);
      assert.equal(error.reason, "TOKEN_INVALID");
      return true;
    });
    assert.equal(issued.length, 2);
    assert.equal(introspectAuthorization.length, 2);
  });

  it("a refused IssueServiceToken rejects with the server's code and reason (ServiceTokenError), not retried", async () => {
    issueFailure = failure(GrpcStatus.UNAUTHENTICATED, "INVALID_CREDENTIALS", "Wrong client id or secret.");
    await assert.rejects(client.introspect({ accessToken: "t" }), (error: unknown) => {
      assert.ok(error instanceof ServiceTokenError);
      assert.ok(error instanceof AuthServiceError);
      assert.equal(error.status, "UNAUTHENTICATED");
      assert.equal(error.reason, "INVALID_CREDENTIALS");
      assert.equal(error.domain, "auth.v1");
      assert.match(error.message, /IssueServiceToken/);
      return true;
    });
    assert.equal(issued.length, 1);
    assert.equal(introspectAuthorization.length, 0, "no Introspect without a token");
    issueFailure = undefined; // a failure is not cached
    assert.equal((await client.introspect({ accessToken: "t" })).active, true);
    assert.equal(issued.length, 2);
  });

  it("never sends the service token on calls meant for people; a caller's own token wins", async () => {
    await client.getMe();
    await client.withToken("alice").getMe();
    await client.getMe({ token: "bob" });
    await client.withToken("alice").introspect({ accessToken: "t" }); // the bound person's token is not the service's
    await client.introspect({ accessToken: "t" }, { token: "own-1" });
    await client.introspect({ accessToken: "t" }, { headers: { Authorization: "Bearer own-2" } });
    assert.deepEqual(getMeAuthorization, ["", "Bearer alice", "Bearer bob"]);
    assert.deepEqual(introspectAuthorization, ["Bearer svc-1", "Bearer own-1", "Bearer own-2"]);
    assert.deepEqual(issueAuthorization, [""], "the person's bound token is not sent on IssueServiceToken either");
  });

  it("the guard's gate fails closed (503) when this service's credentials are refused, whatever the code", async () => {
    const errors: AuthServiceError[] = [];
    const gate = new AuthGate(client, { onIntrospectError: (error) => errors.push(error) });
    for (const refusal of [
      failure(GrpcStatus.UNAUTHENTICATED, "INVALID_CREDENTIALS", "Wrong client id or secret."),
      failure(GrpcStatus.NOT_FOUND, "TENANT_NOT_FOUND", "No such tenant."), // the module's tenant, not the caller's
    ]) {
      issueFailure = refusal;
      await assert.rejects(gate.authenticate("user-token", "acme"), (error: unknown) => {
        assert.ok(error instanceof AuthServiceError);
        assert.equal(error.code, GrpcStatus.UNAVAILABLE);
        assert.equal(error.reason, "AUTH_SERVICE_UNAVAILABLE");
        return true;
      });
    }
    assert.equal(errors.length, 2);
    assert.ok(errors.every((error) => error instanceof ServiceTokenError));
    issueFailure = undefined;
    assert.equal((await gate.authenticate("user-token", "acme")).username, "jane");
  });

  it("the deadline covers getting the token", async () => {
    issueDelayMs = 1000;
    const started = Date.now();
    await assert.rejects(client.introspect({ accessToken: "t" }, { timeoutMs: 200 }), (error: unknown) => {
      assert.ok(error instanceof AuthServiceError);
      assert.equal(error.code, GrpcStatus.DEADLINE_EXCEEDED);
      return true;
    });
    assert.ok(Date.now() - started < 900);
  });

  it("AuthModule builds its AuthClient with serviceCredentials, and the guard's Introspect uses them", async () => {
    const app = await Test.createTestingModule({
      imports: [AuthModule.forRoot({ address: server.address, tenant: "acme", serviceCredentials: CREDENTIALS })],
    }).compile();
    try {
      const moduleClient = app.get(AuthClient);
      assert.equal(moduleClient.hasServiceCredentials, true);
      assert.equal((await app.get(AuthGate).authenticate("user-token", undefined)).id, "u1");
      assert.deepEqual(introspectAuthorization, ["Bearer svc-1"]);
    } finally {
      await app.close();
    }
  });
});
