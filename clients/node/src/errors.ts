/**
 * The error model as a caller of auth.v1 sees it.
 *
 * A failed call carries a gRPC status code and message; the auth service adds a `google.rpc.Status` in
 * the `grpc-status-details-bin` trailer holding a `google.rpc.ErrorInfo` (a stable UPPER_SNAKE `reason`,
 * the domain "auth.v1", string metadata) and, for input errors, a `google.rpc.BadRequest`.
 * `fromServiceError` turns a failed @grpc/grpc-js call into an `AuthServiceError` carrying all of it,
 * so callers write `if (e instanceof AuthServiceError && e.reason === "SESSION_REVOKED")`.
 *
 * The same module builds such statuses (`statusDetails`), so the guard answers gRPC callers in exactly
 * the shape the auth service itself does, and maps codes to HTTP as the auth service's bridge does.
 */
import { Metadata, status as GrpcStatus } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";

import { Any } from "./gen/google/protobuf/any";
import { BadRequest, ErrorInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";

export { GrpcStatus };

/** ErrorInfo.domain of every error the auth service (and this package's guard) sends. */
export const DOMAIN = "auth.v1";
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";
const TYPE_PREFIX = "type.googleapis.com/";
const ERROR_INFO_TYPE = `${TYPE_PREFIX}google.rpc.ErrorInfo`;
const BAD_REQUEST_TYPE = `${TYPE_PREFIX}google.rpc.BadRequest`;

export interface FieldViolation {
  field: string;
  description: string;
}

/** The name of a gRPC status code, e.g. "UNAUTHENTICATED" (GrpcStatus is the numeric enum). */
export type GrpcStatusName = keyof typeof GrpcStatus;

export function statusName(code: GrpcStatus): GrpcStatusName {
  return (GrpcStatus[code] as GrpcStatusName | undefined) ?? "UNKNOWN";
}

/**
 * A failed call of the auth service: gRPC `code`, ErrorInfo `reason` ("" when the server sent none,
 * e.g. when the connection itself failed or the deadline passed), `domain`, `metadata` and the
 * BadRequest `fieldViolations`.
 */
export class AuthServiceError extends Error {
  override readonly name = "AuthServiceError";
  readonly code: GrpcStatus;
  readonly reason: string;
  readonly domain: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly fieldViolations: readonly FieldViolation[];

  constructor(
    code: GrpcStatus,
    reason: string,
    message: string,
    extra: { domain?: string; metadata?: Record<string, string>; fieldViolations?: FieldViolation[]; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.code = code;
    this.reason = reason;
    this.domain = extra.domain ?? "";
    this.metadata = { ...(extra.metadata ?? {}) };
    this.fieldViolations = [...(extra.fieldViolations ?? [])];
  }

  /** "UNAUTHENTICATED", "UNAVAILABLE", ... */
  get status(): GrpcStatusName {
    return statusName(this.code);
  }

  /** The HTTP status the auth service's bridge answers this error with. */
  get httpStatus(): number {
    return httpStatusOf(this.code);
  }

  override toString(): string {
    return `${this.name}: ${this.status}${this.reason ? ` ${this.reason}` : ""}: ${this.message}`;
  }
}

/** Parses the google.rpc.Status of a `grpc-status-details-bin` value; undefined when malformed. */
export function parseStatusDetails(bytes: Uint8Array): Status | undefined {
  try {
    return Status.decode(bytes);
  } catch {
    return undefined; // a malformed detail is no reason to lose the status code
  }
}

/** The typed error for a failed @grpc/grpc-js call (or anything thrown while making one). */
export function fromServiceError(error: unknown): AuthServiceError {
  if (error instanceof AuthServiceError) return error;
  const failed = error as Partial<ServiceError> | undefined;
  const code = typeof failed?.code === "number" ? (failed.code as GrpcStatus) : GrpcStatus.UNKNOWN;
  let message = (typeof failed?.details === "string" && failed.details) || "";
  if (!message) message = error instanceof Error ? error.message : String(error);
  let reason = "";
  let domain = "";
  let metadata: Record<string, string> = {};
  const fieldViolations: FieldViolation[] = [];
  const raw = failed?.metadata instanceof Metadata ? failed.metadata.get(STATUS_DETAILS_KEY)[0] : undefined;
  const status = raw instanceof Uint8Array ? parseStatusDetails(raw) : undefined;
  // A proxy that rewrote the status code makes the details someone else's: trust the transport's code.
  if (status !== undefined && status.code === code) {
    for (const detail of status.details) {
      if (detail.typeUrl === ERROR_INFO_TYPE) {
        const info = ErrorInfo.decode(detail.value);
        ({ reason, domain } = info);
        metadata = { ...info.metadata };
      } else if (detail.typeUrl === BAD_REQUEST_TYPE) {
        for (const v of BadRequest.decode(detail.value).fieldViolations) {
          fieldViolations.push({ field: v.field, description: v.description });
        }
      }
    }
  }
  return new AuthServiceError(code, reason, message, { domain, metadata, fieldViolations, cause: error });
}

/** `grpc-status-details-bin` bytes carrying ErrorInfo (domain "auth.v1"), as the auth service sends. */
export function statusDetails(code: GrpcStatus, reason: string, message: string, metadata: Record<string, string> = {}): Buffer {
  const info = Buffer.from(ErrorInfo.encode({ reason, domain: DOMAIN, metadata }).finish());
  const details: Any[] = [{ typeUrl: ERROR_INFO_TYPE, value: info }];
  return Buffer.from(Status.encode({ code, message, details }).finish());
}

/** gRPC code -> HTTP status, as google/rpc/code.proto documents and the auth service's bridge answers. */
const HTTP_STATUS: Partial<Record<GrpcStatus, number>> = {
  [GrpcStatus.UNAUTHENTICATED]: 401,
  [GrpcStatus.PERMISSION_DENIED]: 403,
  [GrpcStatus.FAILED_PRECONDITION]: 400,
  [GrpcStatus.INVALID_ARGUMENT]: 400,
  [GrpcStatus.OUT_OF_RANGE]: 400,
  [GrpcStatus.NOT_FOUND]: 404,
  [GrpcStatus.ALREADY_EXISTS]: 409,
  [GrpcStatus.ABORTED]: 409,
  [GrpcStatus.RESOURCE_EXHAUSTED]: 429,
  [GrpcStatus.UNAVAILABLE]: 503,
  [GrpcStatus.DEADLINE_EXCEEDED]: 504,
};

export function httpStatusOf(code: GrpcStatus): number {
  return HTTP_STATUS[code] ?? 500;
}

/** The body the auth service's HTTP bridge answers errors with (reason in lower case). */
export interface HttpErrorBody {
  error: {
    code: number;
    status: GrpcStatusName;
    reason: string;
    message: string;
    fields?: FieldViolation[];
    metadata?: Record<string, string>;
  };
}

const GENERIC_MESSAGES: Partial<Record<GrpcStatus, string>> = {
  [GrpcStatus.UNAVAILABLE]: "The service is unavailable; retry later.",
  [GrpcStatus.DEADLINE_EXCEEDED]: "The service did not answer in time; retry later.",
  [GrpcStatus.INTERNAL]: "Internal error.",
};

/**
 * `{"error": {"code", "status", "reason", "message"}}` for an error, as the bridge writes it: an error
 * without auth.v1's ErrorInfo (the connection failed, a deadline) gets the status name as its reason and
 * a generic message, so transport details such as addresses never reach the caller.
 */
export function httpErrorBody(error: AuthServiceError): HttpErrorBody {
  const ours = error.domain === DOMAIN && error.reason !== "";
  const body: HttpErrorBody = {
    error: {
      code: error.httpStatus,
      status: error.status,
      reason: (ours ? error.reason : error.status).toLowerCase(),
      message: ours ? error.message : (GENERIC_MESSAGES[error.code] ?? "The request could not be completed."),
    },
  };
  if (error.fieldViolations.length) body.error.fields = [...error.fieldViolations];
  if (Object.keys(error.metadata).length) body.error.metadata = { ...error.metadata };
  return body;
}
