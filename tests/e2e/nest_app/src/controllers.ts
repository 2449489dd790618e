import { Body, Controller, Get, Headers, HttpCode, Post } from "@nestjs/common";
import { GrpcMethod } from "@nestjs/microservices";
import { AuthClient, AuthGate, CurrentUser, Public, Roles } from "auth-service-client";
import type { AuthUser } from "auth-service-client";

interface SignupBody {
  username: string;
  email: string;
  password: string;
}

/** A gateway's account routes: the package's AuthClient behind @Public() routes, and the caller's own. */
@Controller("account")
export class AccountController {
  constructor(
    private readonly auth: AuthClient,
    private readonly gate: AuthGate,
  ) {}

  @Public()
  @Get("health")
  health(): { status: string } {
    return { status: "ok" };
  }

  /** The guard's revocation stream as an operator would watch it (AuthGate.revocations). */
  @Public()
  @Get("health/revocations")
  revocations(): { up: boolean; events: number; fallbacks: number } {
    const { up, events, fallbacks } = this.gate.revocations;
    return { up, events, fallbacks };
  }

  @Public()
  @Post("signup")
  @HttpCode(200)
  async signup(@Body() body: SignupBody) {
    // The same answer whether or not the address has an account: the code (or a notice) went by mail.
    const { signupId, deliveryHint } = await this.auth.signup(body);
    return { signupId, deliveryHint };
  }

  @Public()
  @Post("signup/verify")
  @HttpCode(200)
  async verifySignup(@Body() body: { signupId: string; code: string }) {
    const { user } = await this.auth.verifySignup(body);
    return { id: user?.id, username: user?.username, emailVerified: user?.emailVerified };
  }

  @Public()
  @Post("login")
  @HttpCode(200)
  async login(@Body() body: { usernameOrEmail: string; password: string }) {
    const { loginId } = await this.auth.login(body);
    return { loginId };
  }

  @Public()
  @Post("login/verify")
  @HttpCode(200)
  async verify(@Body() body: { loginId: string; otp: string }) {
    const tokens = await this.auth.verifyOtp({ ...body, deviceName: "nest e2e" });
    return { accessToken: tokens.accessToken, sessionId: tokens.sessionId };
  }

  @Get("me")
  me(@CurrentUser() user: AuthUser): AuthUser {
    return user;
  }

  @Get("me/id")
  myId(@CurrentUser("id") id: string): { id: string } {
    return { id };
  }

  /** The caller's sessions, through AuthClient with the caller's own token. */
  @Get("sessions")
  async sessions(@Headers("authorization") authorization: string) {
    const token = authorization.replace(/^Bearer\s+/i, "");
    const { sessions } = await this.auth.listSessions({ token });
    return { count: sessions.length };
  }
}

@Controller("reports")
export class ReportsController {
  @Roles("admin")
  @Get("admin")
  admin(@CurrentUser() user: AuthUser): { report: string; for: string } {
    return { report: "all the numbers", for: user.username };
  }

  @Roles("user", "manager", "admin")
  @Get("any-role")
  anyRole(@CurrentUser("role") role: string): { role: string } {
    return { role };
  }
}

/** The same guard on a gRPC microservice handler (ExecutionContext type "rpc"). */
@Controller()
export class DemoGrpcController {
  @GrpcMethod("DemoService", "WhoAmI")
  whoAmI(_request: unknown, @CurrentUser() user: AuthUser) {
    return { ...user, tenant_id: user.tenantId, session_id: user.sessionId };
  }

  @Roles("admin")
  @GrpcMethod("DemoService", "AdminReport")
  adminReport() {
    return { report: "all the numbers" };
  }
}
