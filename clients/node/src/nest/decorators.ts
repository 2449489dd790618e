/**
 * @Public(), @Roles() and @CurrentUser(): the decorators of auth-lib, with the same metadata keys, so
 * handlers decorated with auth-lib's @Public() / @Roles() keep their meaning under this AuthGuard.
 */
import { SetMetadata, createParamDecorator } from "@nestjs/common";
import type { ExecutionContext } from "@nestjs/common";

import type { AuthUser } from "../gate";
import { APP_ROLES, isAppRole } from "../roles";
import type { AppRole } from "../roles";
import { userOf } from "./context";

export const IS_PUBLIC_KEY = "isPublic";
export const ROLES_KEY = "app_roles_required";

/** The handler (or every handler of the class) answers without a token: the guard does not run. */
export const Public = (): MethodDecorator & ClassDecorator => SetMetadata(IS_PUBLIC_KEY, true);

/**
 * The caller's live user must hold one of these roles (checked against Introspect, never token
 * claims). On a handler it overrides the class's @Roles(). An unknown or empty list fails at start-up.
 */
export const Roles = (...roles: AppRole[]): MethodDecorator & ClassDecorator => {
  if (roles.length === 0 || !roles.every(isAppRole)) {
    throw new TypeError(`@Roles() takes one or more of ${APP_ROLES.join(", ")}; got ${JSON.stringify(roles)}`);
  }
  return SetMetadata(ROLES_KEY, roles);
};

/**
 * The caller of a guarded handler, `{ id, username, email, role, tenantId, sessionId }`, or one of its
 * fields (`@CurrentUser("id")`). Undefined in a @Public() handler. Works for HTTP and RPC handlers.
 */
export const CurrentUser = createParamDecorator(
  (field: keyof AuthUser | undefined, context: ExecutionContext): AuthUser | AuthUser[keyof AuthUser] | undefined => {
    const user = userOf(context);
    return field === undefined ? user : user?.[field];
  },
);
