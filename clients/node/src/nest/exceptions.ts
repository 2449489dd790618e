/**
 * Denials and auth service errors as NestJS answers them.
 *
 * HTTP: the status and body of the auth service's HTTP bridge,
 * `{"error": {"code": 401, "status": "UNAUTHENTICATED", "reason": "session_revoked", "message": "..."}}`
 * (reason in lower case), plus `WWW-Authenticate` on 401 (RFC 6750).
 * RPC: an RpcException whose error is `{ code, message, details, status, reason }` with the gRPC code
 * and the UPPER_SNAKE reason; for a gRPC microservice also the `grpc-status-details-bin` trailer with
 * `google.rpc.ErrorInfo` (domain "auth.v1"), exactly as auth.v1 itself answers.
 */
import { Catch, HttpException } from "@nestjs/common";
import type { ArgumentsHost, ExceptionFilter } from "@nestjs/common";
import type { RpcException as RpcExceptionClass } from "@nestjs/microservices";
import { throwError } from "rxjs";
import type { Observable } from "rxjs";

import { AuthServiceError, STATUS_DETAILS_KEY, httpErrorBody, statusDetails } from "../errors";
import { isMetadata } from "./context";
import type { MetadataLike } from "./context";

/** The bridge-shaped HttpException for an AuthServiceError. */
export function toHttpException(error: AuthServiceError): HttpException {
  return new HttpException(httpErrorBody(error), error.httpStatus, { cause: error });
}

/** The WWW-Authenticate value for a 401, as the bridge sends it; undefined for other statuses. */
export function wwwAuthenticate(error: AuthServiceError): string | undefined {
  if (error.httpStatus !== 401) return undefined;
  // RFC 6750 section 3: no error code when the request carried no token at all.
  return error.reason === "TOKEN_MISSING" ? "Bearer" : 'Bearer error="invalid_token"';
}

/** Sets a response header on an Express or Fastify response. */
export function setHeader(response: unknown, name: string, value: string): void {
  const target = response as { header?: unknown; setHeader?: unknown } | undefined;
  if (typeof target?.header === "function") (target.header as (n: string, v: string) => void).call(target, name, value);
  else if (typeof target?.setHeader === "function") (target.setHeader as (n: string, v: string) => void).call(target, name, value);
}

/** The RPC error object of an AuthServiceError (see the module comment). */
export interface RpcError {
  code: number;
  message: string;
  details: string;
  status: string;
  reason: string;
  metadata?: MetadataLike;
}

type MetadataConstructor = new () => MetadataLike;

/** The RPC error object of an AuthServiceError; `callMetadata`: the gRPC call's metadata, if any. */
export function rpcError(error: AuthServiceError, callMetadata?: unknown): RpcError {
  const body: RpcError = {
    code: error.code,
    message: error.message,
    details: error.message,
    status: error.status,
    reason: error.reason,
  };
  if (isMetadata(callMetadata)) {
    // The trailer must be an instance of the app's own grpc-js Metadata: build it from the call's.
    const trailer = new (callMetadata.constructor as MetadataConstructor)();
    trailer.set(STATUS_DETAILS_KEY, statusDetails(error.code, error.reason, error.message, { ...error.metadata }));
    body.metadata = trailer;
  }
  return body;
}

/** The RpcException for an AuthServiceError (see rpcError). */
export function toRpcException(error: AuthServiceError, callMetadata?: unknown): RpcExceptionClass {
  // Loaded here, not at the top: @nestjs/microservices is an optional peer, needed only by RPC apps.
  const { RpcException } = require("@nestjs/microservices") as typeof import("@nestjs/microservices");
  return new RpcException(rpcError(error, callMetadata));
}

/**
 * An exception filter answering AuthServiceError thrown by handlers (an AuthClient call that failed,
 * e.g. a login proxied by a gateway) the way the bridge does: `app.useGlobalFilters(new AuthServiceErrorFilter())`.
 * In an RPC handler it answers with the RPC error of `rpcError`.
 */
@Catch(AuthServiceError)
export class AuthServiceErrorFilter implements ExceptionFilter<AuthServiceError> {
  catch(error: AuthServiceError, host: ArgumentsHost): unknown {
    if (host.getType<string>() !== "http") return this.rpc(error, host.switchToRpc().getContext());
    const response = host.switchToHttp().getResponse<unknown>();
    const header = wwwAuthenticate(error);
    if (header !== undefined) setHeader(response, "WWW-Authenticate", header);
    const reply = response as { status?: (code: number) => { json?: (body: unknown) => unknown; send?: (body: unknown) => unknown } };
    const sent = reply.status?.(error.httpStatus);
    if (typeof sent?.json === "function") return sent.json(httpErrorBody(error));
    return sent?.send?.(httpErrorBody(error));
  }

  private rpc(error: AuthServiceError, callMetadata: unknown): Observable<never> {
    const body = rpcError(error, callMetadata);
    return throwError(() => body);
  }
}
