import "reflect-metadata";

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Metadata, status as GrpcStatus } from "@grpc/grpc-js";
import { HttpException } from "@nestjs/common";
import { ROUTE_ARGS_METADATA } from "@nestjs/common/constants";
import { Reflector } from "@nestjs/core";
import { RpcException } from "@nestjs/microservices";

import { AuthGate, AuthGuard, AuthServiceError, CurrentUser, Public, Role, Roles, RolesGuard, STATUS_DETAILS_KEY, fromServiceError } from "../src";
import type { AuthClient, AuthUser, IntrospectResponse, RpcError } from "../src";
import { httpContext, rpcContext } from "../testing/support";

const TOKENS: Record<string, IntrospectResponse> = {
  user: live(Role.ROLE_USER),
  admin: live(Role.ROLE_ADMIN),
  revoked: { active: false, user: undefined, sessionId: "", tenantId: "", expiresAt: undefined, inactiveReason: "SESSION_REVOKED", serviceAccount: undefined },
};

function live(role: Role): IntrospectResponse {
  return {
    active: true,
    user: { id: `id-${role}`, username: `name-${role}`, email: "e@example.com", name: "", phone: "", role, locked: false, createdAt: undefined, tenantId: "acme", emailVerified: false },
    sessionId: `session-${role}`,
    tenantId: "acme",
    expiresAt: new Date(Date.now() + 60_000),
    inactiveReason: "",
    serviceAccount: undefined,
  };
}

let authUp = true;
const tenantsSeen: (string | undefined)[] = [];
const fakeClient = {
  async introspect(request: { accessToken?: string }, options?: { tenant?: string }) {
    tenantsSeen.push(options?.tenant);
    if (!authUp) throw new AuthServiceError(GrpcStatus.UNAVAILABLE, "", "no route to host");
    return TOKENS[request.accessToken ?? ""] ?? TOKENS["revoked"];
  },
} as unknown as AuthClient;

class Controller {
  open(): void {}
  mine(): void {}
  @Roles("admin")
  admin(): void {}
  @Roles("user", "admin")
  either(): void {}
}

@Public()
class PublicController {
  anything(): void {}
}

@Roles("admin")
class AdminController {
  @Public()
  health(): void {}
  @Roles("user")
  relaxed(): void {}
  strict(): void {}
}

function guard(): AuthGuard {
  return new AuthGuard(new Reflector(), new AuthGate(fakeClient, { cacheTtlMs: 0 }));
}

async function httpDenial(promise: Promise<unknown>): Promise<{ status: number; body: unknown }> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof HttpException, String(error));
    return { status: error.getStatus(), body: error.getResponse() };
  }
  assert.fail("expected a denial");
}

function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

describe("AuthGuard over HTTP", () => {
  it("lets @Public() handlers and classes through without a token, and without asking the auth service", async () => {
    authUp = false;
    try {
      assert.equal(await guard().canActivate(httpContext(PublicController, PublicController.prototype.anything)), true);
      assert.equal(await guard().canActivate(httpContext(AdminController, AdminController.prototype.health)), true);
    } finally {
      authUp = true;
    }
  });

  it("answers 401 token_missing without a token, as the bridge does", async () => {
    const context = httpContext(Controller, Controller.prototype.mine);
    const { status, body } = await httpDenial(guard().canActivate(context));
    assert.equal(status, 401);
    assert.deepEqual(body, {
      error: { code: 401, status: "UNAUTHENTICATED", reason: "token_missing", message: "An access token is required: send 'authorization: Bearer <token>'." },
    });
    assert.equal(context.http.response.headers["www-authenticate"], "Bearer");
  });

  it("answers 401 session_revoked for a revoked token, with WWW-Authenticate invalid_token", async () => {
    const context = httpContext(Controller, Controller.prototype.mine, bearer("revoked"));
    const { status, body } = await httpDenial(guard().canActivate(context));
    assert.equal(status, 401);
    assert.equal((body as { error: { reason: string } }).error.reason, "session_revoked");
    assert.equal(context.http.response.headers["www-authenticate"], 'Bearer error="invalid_token"');
  });

  it("leaves the live user on request.user and gives it to @CurrentUser()", async () => {
    const context = httpContext(Controller, Controller.prototype.mine, { ...bearer("user"), "x-tenant-id": "acme" });
    assert.equal(await guard().canActivate(context), true);
    const expected: AuthUser = { id: "id-1", username: "name-1", email: "e@example.com", role: "user", tenantId: "acme", sessionId: "session-1" };
    assert.deepEqual(context.http.request.user, expected);
    assert.deepEqual(currentUser(undefined, context), expected);
    assert.equal(currentUser("sessionId", context), "session-1");
    assert.equal(tenantsSeen.at(-1), "acme");
  });

  it("checks @Roles() against the live user: 403 insufficient_role, handler overriding class", async () => {
    const forbidden = await httpDenial(guard().canActivate(httpContext(Controller, Controller.prototype.admin, bearer("user"))));
    assert.equal(forbidden.status, 403);
    assert.deepEqual(forbidden.body, { error: { code: 403, status: "PERMISSION_DENIED", reason: "insufficient_role", message: "Your role does not allow this call." } });
    assert.equal(await guard().canActivate(httpContext(Controller, Controller.prototype.admin, bearer("admin"))), true);
    assert.equal(await guard().canActivate(httpContext(Controller, Controller.prototype.either, bearer("user"))), true);
    assert.equal(await guard().canActivate(httpContext(AdminController, AdminController.prototype.relaxed, bearer("user"))), true);
    assert.equal((await httpDenial(guard().canActivate(httpContext(AdminController, AdminController.prototype.strict, bearer("user"))))).status, 403);
  });

  it("answers 503 when the auth service cannot answer: never a pass", async () => {
    authUp = false;
    try {
      const { status, body } = await httpDenial(guard().canActivate(httpContext(Controller, Controller.prototype.mine, bearer("admin"))));
      assert.equal(status, 503);
      assert.equal((body as { error: { reason: string } }).error.reason, "auth_service_unavailable");
    } finally {
      authUp = true;
    }
  });

  it("RolesGuard (auth-lib's wiring) checks the user AuthGuard left", async () => {
    const roles = new RolesGuard(new Reflector());
    const context = httpContext(Controller, Controller.prototype.admin, bearer("user"));
    await httpDenial(guard().canActivate(context));
    assert.equal((await httpDenial(Promise.resolve().then(() => roles.canActivate(context)))).status, 401, "no user was left");
    const userContext = httpContext(Controller, Controller.prototype.either, bearer("user"));
    await guard().canActivate(userContext);
    assert.equal(roles.canActivate(userContext), true);
    assert.equal(roles.canActivate(httpContext(Controller, Controller.prototype.mine)), true, "no @Roles(): nothing to check");
  });
});

function rpcDenial(error: unknown): RpcError {
  assert.ok(error instanceof RpcException, String(error));
  return error.getError() as RpcError;
}

describe("AuthGuard over RPC", () => {
  it("reads a gRPC call's metadata and answers with the gRPC status and ErrorInfo in the trailer", async () => {
    const metadata = new Metadata();
    await assert.rejects(guard().canActivate(rpcContext(Controller, Controller.prototype.mine, {}, metadata)), (error: unknown) => {
      const body = rpcDenial(error);
      assert.equal(body.code, GrpcStatus.UNAUTHENTICATED);
      assert.equal(body.reason, "TOKEN_MISSING");
      assert.ok(body.metadata instanceof Metadata, "a trailer of the app's own grpc-js Metadata");
      // What a gRPC caller would read from the trailer:
      const parsed = fromServiceError({ code: body.code, details: body.details, metadata: body.metadata });
      assert.equal(parsed.reason, "TOKEN_MISSING");
      assert.equal(parsed.domain, "auth.v1");
      assert.ok((body.metadata as Metadata).get(STATUS_DETAILS_KEY)[0] instanceof Buffer);
      return true;
    });

    metadata.set("authorization", "Bearer admin");
    const data = { orderId: "o-1" };
    const context = rpcContext(Controller, Controller.prototype.admin, data, metadata);
    assert.equal(await guard().canActivate(context), true);
    assert.equal(currentUser("role", context), "admin");

    const userCall = new Metadata();
    userCall.set("authorization", "Bearer user");
    await assert.rejects(guard().canActivate(rpcContext(Controller, Controller.prototype.admin, {}, userCall)), (error: unknown) => {
      assert.equal(rpcDenial(error).code, GrpcStatus.PERMISSION_DENIED);
      return true;
    });
  });

  it("reads the payload of other transports (TCP): headers.authorization, accessToken, tenantId", async () => {
    const tcpContext = { getPattern: () => "orders.list" };
    const revoked = { headers: { authorization: "Bearer revoked" } };
    await assert.rejects(guard().canActivate(rpcContext(Controller, Controller.prototype.mine, revoked, tcpContext)), (error: unknown) => {
      const body = rpcDenial(error);
      assert.deepEqual(body, { code: GrpcStatus.UNAUTHENTICATED, message: body.message, details: body.message, status: "UNAUTHENTICATED", reason: "SESSION_REVOKED" });
      return true;
    });
    const payload = { accessToken: "user", tenantId: "acme" };
    const context = rpcContext(Controller, Controller.prototype.mine, payload, tcpContext);
    assert.equal(await guard().canActivate(context), true);
    assert.equal(tenantsSeen.at(-1), "acme");
    assert.equal(currentUser("username", context), "name-1");
  });
});

describe("decorators", () => {
  it("@Roles() refuses unknown and empty role lists at start-up", () => {
    assert.throws(() => Roles(), TypeError);
    assert.throws(() => Roles("root" as "admin"), TypeError);
  });

  it("@CurrentUser() is undefined where no user passed the guard", () => {
    assert.equal(currentUser(undefined, httpContext(PublicController, PublicController.prototype.anything)), undefined);
  });
});

/** Runs @CurrentUser()'s factory as Nest would for a handler parameter. */
function currentUser(field: keyof AuthUser | undefined, context: Parameters<AuthGuard["canActivate"]>[0]): unknown {
  class Probe {
    handler(@CurrentUser() _user: unknown): void {}
  }
  const args = Reflect.getMetadata(ROUTE_ARGS_METADATA, Probe, "handler") as Record<string, { factory: (data: unknown, ctx: unknown) => unknown }>;
  const entry = Object.values(args)[0];
  assert.ok(entry);
  return entry.factory(field, context);
}
