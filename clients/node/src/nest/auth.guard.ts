/**
 * AuthGuard: register it as APP_GUARD and every handler needs a live auth.v1 session unless it is
 * @Public(); @Roles() additionally needs one of the roles, on the live user. HTTP and RPC handlers.
 * RolesGuard and JwtAuthGuard exist so auth-lib's wiring keeps working after swapping the import.
 */
import { Inject, Injectable, Logger } from "@nestjs/common";
import type { CanActivate, ExecutionContext } from "@nestjs/common";
import { Reflector } from "@nestjs/core";

import { AuthServiceError, GrpcStatus } from "../errors";
import { AuthGate, INSUFFICIENT_ROLE_MESSAGE, TOKEN_MISSING_MESSAGE, bearerToken, denial } from "../gate";
import type { AppRole } from "../roles";
import { attachUser, credentialsOf, userOf } from "./context";
import { IS_PUBLIC_KEY, ROLES_KEY } from "./decorators";
import { setHeader, toHttpException, toRpcException, wwwAuthenticate } from "./exceptions";

/** Reflector.getAllAndOverride over handler, then class: a handler's decorator wins over its class's. */
function declared<T>(reflector: Reflector, key: string, context: ExecutionContext): T | undefined {
  return reflector.getAllAndOverride<T | undefined>(key, [context.getHandler(), context.getClass()]);
}

/** The exception answering `error` in this context (HTTP: bridge body + WWW-Authenticate; RPC: gRPC status). */
export function answer(context: ExecutionContext, error: AuthServiceError): Error {
  if (context.getType<string>() === "rpc") return toRpcException(error, context.switchToRpc().getContext());
  if (context.getType<string>() === "http") {
    const header = wwwAuthenticate(error);
    if (header !== undefined) setHeader(context.switchToHttp().getResponse<unknown>(), "WWW-Authenticate", header);
  }
  return toHttpException(error);
}

@Injectable()
export class AuthGuard implements CanActivate {
  private readonly logger = new Logger("AuthGuard");

  constructor(
    @Inject(Reflector) private readonly reflector: Reflector,
    @Inject(AuthGate) private readonly gate: AuthGate,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    if (declared<boolean>(this.reflector, IS_PUBLIC_KEY, context)) return true;
    const roles = declared<AppRole[]>(this.reflector, ROLES_KEY, context);
    const { authorization, tenant } = credentialsOf(context);
    try {
      const user = await this.gate.authenticate(bearerToken(authorization), tenant, roles);
      attachUser(context, user);
      return true;
    } catch (failure) {
      if (!(failure instanceof AuthServiceError)) {
        this.logger.error(failure);
        throw answer(context, new AuthServiceError(GrpcStatus.INTERNAL, "", "Internal error.", { cause: failure }));
      }
      throw answer(context, failure);
    }
  }
}

/** auth-lib's name for the guard that honours @Public(): the same AuthGuard. */
export { AuthGuard as JwtAuthGuard };

/**
 * auth-lib's RolesGuard: checks @Roles() against the user AuthGuard found (AuthGuard already does, so
 * this is needed only where a module registers RolesGuard on its own, after AuthGuard, as auth-lib did).
 */
@Injectable()
export class RolesGuard implements CanActivate {
  constructor(@Inject(Reflector) private readonly reflector: Reflector) {}

  canActivate(context: ExecutionContext): boolean {
    if (declared<boolean>(this.reflector, IS_PUBLIC_KEY, context)) return true;
    const roles = declared<AppRole[]>(this.reflector, ROLES_KEY, context);
    if (roles === undefined || roles.length === 0) return true;
    const user = userOf(context);
    if (user !== undefined && (roles as readonly string[]).includes(user.role)) return true;
    throw answer(
      context,
      user === undefined
        ? denial(GrpcStatus.UNAUTHENTICATED, "TOKEN_MISSING", TOKEN_MISSING_MESSAGE)
        : denial(GrpcStatus.PERMISSION_DENIED, "INSUFFICIENT_ROLE", INSUFFICIENT_ROLE_MESSAGE),
    );
  }
}
