/**
 * auth-service-client: the Node.js / NestJS client of the auth.v1 gRPC authentication service.
 *
 * - AuthClient: typed calls with deadlines, safe retries and AuthServiceError (gRPC code + ErrorInfo reason).
 * - AuthModule, AuthGuard, @Public(), @Roles(), @CurrentUser(): auth-lib's pieces on auth.v1's Introspect.
 * - The generated auth.v1 messages and enums (ts-proto), e.g. `Role`, `User`, `IntrospectResponse`.
 */
export * from "./client";
export * from "./errors";
export * from "./gate";
export * from "./revocations";
export * from "./roles";
export * from "./nest/auth.guard";
export * from "./nest/auth.module";
export * from "./nest/decorators";
export { AuthServiceErrorFilter, rpcError, toHttpException, toRpcException } from "./nest/exceptions";
export type { RpcError } from "./nest/exceptions";
export type { DeepPartial, IntrospectResponse, RevocationEvent, Session, User } from "./gen/auth/v1/auth";
export { RevocationKind } from "./gen/auth/v1/auth";
export * as authV1 from "./gen/auth/v1/auth";
export * as adminV1 from "./gen/auth/v1/admin";
