import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Metadata } from "@grpc/grpc-js";

import {
  AuthServiceError,
  GrpcStatus,
  STATUS_DETAILS_KEY,
  fromServiceError,
  httpErrorBody,
  parseStatusDetails,
  statusDetails,
} from "../src/errors";
import { BadRequest, ErrorInfo } from "../src/gen/google/rpc/error_details";
import { Status } from "../src/gen/google/rpc/status";

function serviceError(code: GrpcStatus, details: string, trailer?: Buffer): Error {
  const metadata = new Metadata();
  if (trailer) metadata.set(STATUS_DETAILS_KEY, trailer);
  return Object.assign(new Error(`${code} ${GrpcStatus[code]}: ${details}`), { code, details, metadata });
}

describe("fromServiceError", () => {
  it("reads the code, the ErrorInfo reason, domain and metadata, and BadRequest violations", () => {
    const info = ErrorInfo.encode({ reason: "RATE_LIMITED", domain: "auth.v1", metadata: { retry_after_seconds: "7" } }).finish();
    const bad = BadRequest.encode({
      fieldViolations: [{ field: "email", description: "A valid e-mail address.", reason: "", localizedMessage: undefined }],
    }).finish();
    const trailer = Buffer.from(
      Status.encode({
        code: GrpcStatus.RESOURCE_EXHAUSTED,
        message: "Slow down.",
        details: [
          { typeUrl: "type.googleapis.com/google.rpc.ErrorInfo", value: Buffer.from(info) },
          { typeUrl: "type.googleapis.com/google.rpc.BadRequest", value: Buffer.from(bad) },
        ],
      }).finish(),
    );
    const original = serviceError(GrpcStatus.RESOURCE_EXHAUSTED, "Slow down.", trailer);
    const error = fromServiceError(original);
    assert.ok(error instanceof AuthServiceError);
    assert.equal(error.code, GrpcStatus.RESOURCE_EXHAUSTED);
    assert.equal(error.status, "RESOURCE_EXHAUSTED");
    assert.equal(error.reason, "RATE_LIMITED");
    assert.equal(error.domain, "auth.v1");
    assert.deepEqual(error.metadata, { retry_after_seconds: "7" });
    assert.deepEqual(error.fieldViolations, [{ field: "email", description: "A valid e-mail address." }]);
    assert.equal(error.message, "Slow down.");
    assert.equal(error.httpStatus, 429);
    assert.equal(error.cause, original);
  });

  it("keeps the transport's code and drops details whose status disagrees (a proxy rewrote it)", () => {
    const trailer = statusDetails(GrpcStatus.UNAUTHENTICATED, "SESSION_REVOKED", "gone");
    const error = fromServiceError(serviceError(GrpcStatus.UNAVAILABLE, "upstream down", trailer));
    assert.equal(error.code, GrpcStatus.UNAVAILABLE);
    assert.equal(error.reason, "");
  });

  it("survives a malformed trailer and errors that are not gRPC errors at all", () => {
    assert.equal(parseStatusDetails(Buffer.from([0xff, 0xff, 0xff])), undefined);
    const error = fromServiceError(serviceError(GrpcStatus.INTERNAL, "boom", Buffer.from([0x0a, 0xff])));
    assert.equal(error.code, GrpcStatus.INTERNAL);
    assert.equal(error.reason, "");
    const plain = fromServiceError(new TypeError("not grpc"));
    assert.equal(plain.code, GrpcStatus.UNKNOWN);
    assert.equal(plain.message, "not grpc");
  });

  it("statusDetails round-trips through fromServiceError", () => {
    const trailer = statusDetails(GrpcStatus.PERMISSION_DENIED, "INSUFFICIENT_ROLE", "no", { role: "user" });
    const error = fromServiceError(serviceError(GrpcStatus.PERMISSION_DENIED, "no", trailer));
    assert.equal(error.reason, "INSUFFICIENT_ROLE");
    assert.equal(error.domain, "auth.v1");
    assert.deepEqual(error.metadata, { role: "user" });
  });
});

describe("httpErrorBody", () => {
  it("answers like the HTTP bridge: lower-case reason, HTTP code, status name", () => {
    const error = new AuthServiceError(GrpcStatus.UNAUTHENTICATED, "SESSION_REVOKED", "Log in again.", { domain: "auth.v1" });
    assert.deepEqual(httpErrorBody(error), {
      error: { code: 401, status: "UNAUTHENTICATED", reason: "session_revoked", message: "Log in again." },
    });
  });

  it("never passes transport details on: an error without auth.v1's ErrorInfo gets a generic message", () => {
    const error = new AuthServiceError(GrpcStatus.UNAVAILABLE, "", "connect ECONNREFUSED 10.0.0.7:50051");
    assert.deepEqual(httpErrorBody(error), {
      error: { code: 503, status: "UNAVAILABLE", reason: "unavailable", message: "The service is unavailable; retry later." },
    });
  });

  it("adds fields and metadata when the error has them", () => {
    const error = new AuthServiceError(GrpcStatus.INVALID_ARGUMENT, "VALIDATION_FAILED", "Fix the fields.", {
      domain: "auth.v1",
      fieldViolations: [{ field: "password", description: "Too short." }],
    });
    const body = httpErrorBody(error);
    assert.equal(body.error.code, 400);
    assert.deepEqual(body.error.fields, [{ field: "password", description: "Too short." }]);
    assert.equal(body.error.metadata, undefined);
  });
});
