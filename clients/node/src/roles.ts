/** Role names as NestJS code writes them ("user", "manager", "admin") and the auth.v1 enum values. */
import { Role } from "./gen/auth/v1/access";

export { Role };

/** The roles of auth.v1 in lower case, as @Roles() and the user object name them (auth-lib's AppRole). */
export type AppRole = "user" | "manager" | "admin";

export const APP_ROLES: readonly AppRole[] = ["user", "manager", "admin"];

const NAMES: Partial<Record<Role, AppRole>> = {
  [Role.ROLE_USER]: "user",
  [Role.ROLE_MANAGER]: "manager",
  [Role.ROLE_ADMIN]: "admin",
};

const VALUES: Record<AppRole, Role> = { user: Role.ROLE_USER, manager: Role.ROLE_MANAGER, admin: Role.ROLE_ADMIN };

/** "user" | "manager" | "admin" for a Role; "unspecified" for ROLE_UNSPECIFIED or a value this version does not know. */
export function roleName(role: Role): AppRole | "unspecified" {
  return NAMES[role] ?? "unspecified";
}

/** The Role for a name ("admin") or a Role itself. */
export function roleValue(role: AppRole | Role): Role {
  if (typeof role === "number") return role;
  const value = VALUES[role];
  if (value === undefined) throw new TypeError(`unknown role ${JSON.stringify(role)}: expected one of ${APP_ROLES.join(", ")}`);
  return value;
}

export function isAppRole(value: unknown): value is AppRole {
  return typeof value === "string" && (APP_ROLES as readonly string[]).includes(value);
}
