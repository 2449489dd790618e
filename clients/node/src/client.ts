/**
 * `AuthClient`: typed calls of auth.v1's AuthService and AdminService over @grpc/grpc-js.
 *
 * Every call has a deadline (`timeoutMs`, 5 s by default) that covers the whole call, retries and
 * backoff included. Retries happen ONLY on UNAVAILABLE and ONLY for RPCs that are safe to send twice
 * (the `idempotent` column of RPCS, the same table as the Python client's): Introspect,
 * IssueServiceToken (a second token is as good as the first), GetMe, ListSessions, ListUsers,
 * ListAuditEvents (reads), UnlockUser, SetUserRole and UpdateMe (setting the same state again changes
 * nothing).
 * Everything else is sent once, because a first attempt may have reached the server before the
 * connection failed: Signup (a second mail, or RATE_LIMITED by the address's resend interval),
 * VerifySignup (a single-use code), Login (a second e-mailed code), VerifyOtp and Refresh (single-use codes
 * and rotating refresh tokens: a replayed refresh token revokes the session as stolen),
 * ChangePassword, ChangeEmail, ConfirmEmailChange, UnlockAccount, LogoutSession, LogoutAll, LockUser,
 * RequestPasswordReset (a second mail whose code supersedes the first), ResetPassword and ReportSignIn
 * (a single-use code and token). Failures reject with
 * `AuthServiceError` (gRPC code + ErrorInfo reason).
 *
 * Service credentials (`serviceCredentials: { clientId, clientSecret }` of an auth.v1 service account):
 * the client gets its own service token (IssueServiceToken, in the client's tenant) and sends it on the
 * calls whose `(auth.v1.access)` rule admits services but not people (the `serviceOnly` column of
 * RPCS: Introspect), never on the others. It asks for a new token before the current one expires (a
 * minute before, or at half its life if that is shorter), and once more when the server refuses the
 * cached one with UNAUTHENTICATED (a rotated secret, a restart of the server's keys); concurrent
 * callers share one IssueServiceToken. A per-call `token` (or `authorization` header) still wins.
 * The Python client (`service_credentials`) does the same.
 */
import { ChannelCredentials, Client, Metadata, credentials as grpcCredentials, status as GrpcStatus } from "@grpc/grpc-js";
import type { ChannelOptions, ClientReadableStream, ServiceError } from "@grpc/grpc-js";

import { AuthServiceError, fromServiceError } from "./errors";
import {
  AdminServiceService,
  ListAuditEventsRequest,
  ListAuditEventsResponse,
  ListUsersRequest,
  ListUsersResponse,
  LockUserRequest,
  LockUserResponse,
  SetUserRoleResponse,
  UnlockUserRequest,
  UnlockUserResponse,
} from "./gen/auth/v1/admin";
import {
  AuthServiceService,
  ChangeEmailRequest,
  ChangeEmailResponse,
  ChangePasswordRequest,
  ChangePasswordResponse,
  ConfirmEmailChangeRequest,
  ConfirmEmailChangeResponse,
  GetMeRequest,
  GetMeResponse,
  IntrospectRequest,
  IntrospectResponse,
  IssueServiceTokenRequest,
  IssueServiceTokenResponse,
  ListSessionsRequest,
  ListSessionsResponse,
  LoginRequest,
  LoginResponse,
  LogoutAllRequest,
  LogoutAllResponse,
  LogoutSessionRequest,
  LogoutSessionResponse,
  RefreshRequest,
  RefreshResponse,
  ReportSignInRequest,
  ReportSignInResponse,
  RequestPasswordResetRequest,
  RequestPasswordResetResponse,
  ResetPasswordRequest,
  ResetPasswordResponse,
  SignupRequest,
  SignupResponse,
  VerifySignupRequest,
  VerifySignupResponse,
  UnlockAccountRequest,
  UnlockAccountResponse,
  UpdateMeRequest,
  UpdateMeResponse,
  VerifyOtpRequest,
  VerifyOtpResponse,
  WatchRevocationsRequest,
} from "./gen/auth/v1/auth";
import type { WatchRevocationsResponse } from "./gen/auth/v1/auth";
import type { DeepPartial } from "./gen/auth/v1/auth";
import { roleValue } from "./roles";
import type { AppRole, Role } from "./roles";

/** Milliseconds per call, retries included, unless the client or the call says otherwise. */
export const DEFAULT_TIMEOUT_MS = 5000;
export const AUTHORIZATION = "authorization";
export const TENANT = "x-tenant-id";

/** One RPC as the client calls it: the generated method definition plus whether it may be resent. */
export interface Rpc<Req, Res> {
  readonly path: string;
  readonly requestSerialize: (value: Req) => Buffer;
  readonly responseDeserialize: (value: Buffer) => Res;
  readonly idempotent: boolean;
  /** Its access rule admits service accounts and not people: sent with the service token (serviceCredentials). */
  readonly serviceOnly: boolean;
}

function rpc<Req, Res>(
  definition: { path: string; requestSerialize: (value: Req) => Buffer; responseDeserialize: (value: Buffer) => Res },
  idempotent: boolean,
  serviceOnly = false,
): Rpc<Req, Res> {
  const { path, requestSerialize, responseDeserialize } = definition;
  return { path, requestSerialize, responseDeserialize, idempotent, serviceOnly };
}

/**
 * Every RPC of auth.v1, whether it is safe to resend after UNAVAILABLE, and whether its
 * `(auth.v1.access)` rule admits only services (ts-proto drops the option; a unit test checks this
 * column against protos/auth/v1). See the module comment.
 */
export const RPCS = {
  signup: rpc(AuthServiceService.signup, false),
  verifySignup: rpc(AuthServiceService.verifySignup, false),
  login: rpc(AuthServiceService.login, false),
  verifyOtp: rpc(AuthServiceService.verifyOtp, false),
  refresh: rpc(AuthServiceService.refresh, false),
  unlockAccount: rpc(AuthServiceService.unlockAccount, false),
  requestPasswordReset: rpc(AuthServiceService.requestPasswordReset, false),
  resetPassword: rpc(AuthServiceService.resetPassword, false),
  reportSignIn: rpc(AuthServiceService.reportSignIn, false),
  issueServiceToken: rpc(AuthServiceService.issueServiceToken, true),
  introspect: rpc(AuthServiceService.introspect, true, true),
  getMe: rpc(AuthServiceService.getMe, true),
  listSessions: rpc(AuthServiceService.listSessions, true),
  logoutSession: rpc(AuthServiceService.logoutSession, false),
  logoutAll: rpc(AuthServiceService.logoutAll, false),
  changePassword: rpc(AuthServiceService.changePassword, false),
  updateMe: rpc(AuthServiceService.updateMe, true),
  changeEmail: rpc(AuthServiceService.changeEmail, false),
  confirmEmailChange: rpc(AuthServiceService.confirmEmailChange, false),
  listUsers: rpc(AdminServiceService.listUsers, true),
  listAuditEvents: rpc(AdminServiceService.listAuditEvents, true),
  lockUser: rpc(AdminServiceService.lockUser, false),
  unlockUser: rpc(AdminServiceService.unlockUser, true),
  setUserRole: rpc(AdminServiceService.setUserRole, true),
} as const;

/** Bounded retries of idempotent calls on UNAVAILABLE: exponential backoff with jitter, never past the deadline. */
export interface RetryPolicy {
  /** First attempt included; 1 disables retries. */
  maxAttempts: number;
  initialBackoffMs: number;
  multiplier: number;
  maxBackoffMs: number;
}

export const DEFAULT_RETRY: Readonly<RetryPolicy> = Object.freeze({
  maxAttempts: 3,
  initialBackoffMs: 100,
  multiplier: 2,
  maxBackoffMs: 1000,
});
export const NO_RETRY: Readonly<RetryPolicy> = Object.freeze({ ...DEFAULT_RETRY, maxAttempts: 1 });

/**
 * Milliseconds to wait before attempt `attempt + 1`, or undefined when the failure is final: not
 * idempotent, not UNAVAILABLE, out of attempts, or the wait would end after the deadline.
 */
export function retryDelay(
  policy: RetryPolicy,
  idempotent: boolean,
  code: GrpcStatus,
  attempt: number,
  remainingMs: number,
  random: () => number = Math.random,
): number | undefined {
  if (!idempotent || code !== GrpcStatus.UNAVAILABLE || attempt >= policy.maxAttempts) return undefined;
  const cap = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * policy.multiplier ** (attempt - 1));
  // "Equal jitter": somewhere in [cap/2, cap], so clients cut off together do not come back in step.
  const delay = cap / 2 + random() * (cap / 2);
  return delay >= remainingMs ? undefined : delay;
}

/** A value, or a function giving the current value (e.g. a token that is refreshed elsewhere). */
export type Source = string | undefined | (() => string | undefined);

function resolve(source: Source): string | undefined {
  return typeof source === "function" ? source() : source;
}

/** Per-call settings every method accepts. */
export interface CallOptions {
  /** Access token for this call (default: the client's bound token). */
  token?: string;
  /** x-tenant-id for this call (default: the client's bound tenant; none: the server's default tenant). */
  tenant?: string;
  /** Deadline of this call in milliseconds, retries included (default: the client's). */
  timeoutMs?: number;
  /** Extra metadata, e.g. { "x-device-name": "CI runner" }; never a second authorization or x-tenant-id. */
  headers?: Record<string, string>;
  /** Cancels the call (it then rejects with CANCELLED). */
  signal?: AbortSignal;
}

export interface AuthClientOptions {
  /** x-tenant-id sent on every call (a value or a function). */
  tenant?: Source;
  /** Access token sent on every call as `authorization: Bearer ...` (a value or a function). */
  token?: Source;
  /** Deadline of every call in milliseconds, retries included. Default 5000. */
  timeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  /** TLS: `credentials.createSsl(...)` of @grpc/grpc-js. Default: plaintext. */
  credentials?: ChannelCredentials;
  channelOptions?: ChannelOptions;
  /**
   * The client id and secret of this service's own auth.v1 service account (`auth-server service
   * create`): the client then sends its own service token on the calls meant for services
   * (Introspect). See the module comment.
   */
  serviceCredentials?: ServiceCredentials;
}

/** The credentials of this service itself (an auth.v1 service account), not of its callers. */
export interface ServiceCredentials {
  clientId: string;
  clientSecret: string;
}

/** Get a new service token this long before the current one expires (or at half its life, if shorter). */
export const SERVICE_TOKEN_MARGIN_MS = 60_000;

/** How long a service token that lives `lifetimeMs` more is used before a new one is asked for. */
export function serviceTokenUseFor(lifetimeMs: number): number {
  const lifetime = Math.max(0, lifetimeMs);
  return lifetime - Math.min(SERVICE_TOKEN_MARGIN_MS, lifetime / 2);
}

/**
 * A failure to get this service's own token (IssueServiceToken): the server's code and reason, as
 * any AuthServiceError, but a problem of this service's credentials, never of its caller's request.
 */
export class ServiceTokenError extends AuthServiceError {
  constructor(error: AuthServiceError) {
    super(error.code, error.reason, `could not get this service's token (IssueServiceToken): ${error.message}`, {
      domain: error.domain,
      metadata: { ...error.metadata },
      fieldViolations: [...error.fieldViolations],
      cause: error,
    });
  }
}

/** The current service token of a client and its bound copies: one token, one fetch at a time. */
class ServiceToken {
  private token: string | undefined;
  private renewAt = 0; // performance.now() after which a new token is asked for
  private pending: Promise<string> | undefined;

  constructor(readonly credentials: Readonly<ServiceCredentials>) {}

  /** The cached token if it is not due for renewal, else one new token shared by concurrent callers. */
  get(fetch: () => Promise<IssueServiceTokenResponse>): Promise<string> {
    if (this.token !== undefined && performance.now() < this.renewAt) return Promise.resolve(this.token);
    if (this.pending === undefined) {
      const asked = performance.now();
      this.pending = fetch()
        .then((answer) => {
          const lifetime = (answer.expiresAt?.getTime() ?? 0) - Date.now();
          this.token = answer.accessToken;
          this.renewAt = asked + serviceTokenUseFor(lifetime);
          return answer.accessToken;
        })
        .finally(() => {
          this.pending = undefined;
        });
    }
    return this.pending;
  }

  /** The server refused `token`: the next call asks for a new one (unless another caller already did). */
  forget(token: string): void {
    if (this.token === token) this.token = undefined;
  }
}

function validCredentials(credentials: ServiceCredentials | undefined): Readonly<ServiceCredentials> | undefined {
  if (credentials === undefined) return undefined;
  const { clientId, clientSecret } = (credentials ?? {}) as Partial<ServiceCredentials>;
  if (typeof clientId !== "string" || clientId.trim() === "" || typeof clientSecret !== "string" || clientSecret === "") {
    throw new TypeError("serviceCredentials must be { clientId, clientSecret }, both non-empty strings");
  }
  return Object.freeze({ clientId, clientSecret });
}

interface Shared {
  client: Client;
  closed: boolean;
  service: ServiceToken | undefined;
}

/** How bound copies (withToken, withTenant) share the channel; not part of the public options. */
const SHARED = Symbol("auth-service-client shared channel");
type InternalOptions = AuthClientOptions & { [SHARED]?: Shared };

/**
 * Client of AuthService and AdminService.
 *
 *     const auth = new AuthClient("auth.internal:50051", { tenant: "acme" });
 *     const { loginId } = await auth.login({ usernameOrEmail: "alice", password });
 *     const tokens = await auth.verifyOtp({ loginId, otp: code, deviceName: "Laptop" });
 *     const me = await auth.withToken(tokens.accessToken).getMe();
 *
 * `withToken` / `withTenant` give bound copies sharing the same channel; `close()` closes it.
 */
export class AuthClient {
  readonly address: string;
  private readonly shared: Shared;
  private readonly tenant: Source;
  private readonly token: Source;
  private readonly timeoutMs: number;
  private readonly retry: RetryPolicy;

  /** `address`: "host:port" of the auth service (any @grpc/grpc-js target, e.g. "dns:///auth:50051"). */
  constructor(address: string, options: AuthClientOptions = {}) {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(timeoutMs > 0)) throw new RangeError("timeoutMs must be positive: every call needs a deadline");
    this.timeoutMs = timeoutMs;
    this.tenant = options.tenant;
    this.token = options.token;
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    const shared = (options as InternalOptions)[SHARED];
    this.address = address;
    if (shared !== undefined) {
      this.shared = shared;
    } else {
      const service = validCredentials(options.serviceCredentials);
      this.shared = {
        client: new Client(address, options.credentials ?? grpcCredentials.createInsecure(), options.channelOptions ?? {}),
        closed: false,
        service: service === undefined ? undefined : new ServiceToken(service),
      };
    }
  }

  /** Whether close() was called (on this client or any copy sharing its channel). */
  get closed(): boolean {
    return this.shared.closed;
  }

  /** Whether this client has serviceCredentials (and so sends its own token on Introspect). */
  get hasServiceCredentials(): boolean {
    return this.shared.service !== undefined;
  }

  /**
   * This service's current token (serviceCredentials), asked for with IssueServiceToken when there is
   * none or it is due for renewal; concurrent callers share one request. Rejects with a
   * ServiceTokenError when the auth service refuses or cannot answer.
   */
  async serviceToken(options: Pick<CallOptions, "timeoutMs"> = {}): Promise<string> {
    const holder = this.shared.service;
    if (holder === undefined) throw new TypeError("this AuthClient has no serviceCredentials");
    return this.serviceTokenBy(holder, Date.now() + (options.timeoutMs ?? this.timeoutMs));
  }

  private serviceTokenBy(holder: ServiceToken, deadline: number): Promise<string> {
    return holder.get(async () => {
      try {
        // token "": no authorization header (never a person's token bound to this copy).
        return await this.callBy(RPCS.issueServiceToken, IssueServiceTokenRequest.fromPartial(holder.credentials), { token: "" }, deadline);
      } catch (failure) {
        throw new ServiceTokenError(fromServiceError(failure));
      }
    });
  }

  private copy(changes: Partial<AuthClientOptions>): AuthClient {
    const options: InternalOptions = {
      tenant: this.tenant,
      token: this.token,
      timeoutMs: this.timeoutMs,
      retry: this.retry,
      ...changes,
      [SHARED]: this.shared,
    };
    return new AuthClient(this.address, options);
  }

  /** A copy sending `token` (a value or a function) on every call; it shares this client's channel. */
  withToken(token: Source): AuthClient {
    return this.copy({ token });
  }

  /** A copy sending `tenant` as x-tenant-id on every call; it shares this client's channel. */
  withTenant(tenant: Source): AuthClient {
    return this.copy({ tenant });
  }

  /** Closes the channel (of this client and every copy made from it). */
  close(): void {
    if (!this.shared.closed) {
      this.shared.closed = true;
      this.shared.client.close();
    }
  }

  /** The call metadata: extra headers, then authorization and x-tenant-id unless the headers had them. */
  metadata(options: CallOptions = {}): Metadata {
    const metadata = new Metadata();
    for (const [key, value] of Object.entries(options.headers ?? {})) metadata.set(key.toLowerCase(), value);
    const token = options.token ?? resolve(this.token);
    const tenant = options.tenant ?? resolve(this.tenant);
    if (token && metadata.get(AUTHORIZATION).length === 0) metadata.set(AUTHORIZATION, `Bearer ${token}`);
    if (tenant && metadata.get(TENANT).length === 0) metadata.set(TENANT, tenant);
    return metadata;
  }

  /**
   * One call of `rpc` with deadline, retries and typed errors (the typed methods use this). A
   * service-only RPC goes with this service's token when the client has serviceCredentials and the
   * call brings no token of its own; the deadline covers getting that token too.
   */
  async call<Req, Res>(method: Rpc<Req, Res>, request: Req, options: CallOptions = {}): Promise<Res> {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    if (!(timeoutMs > 0)) throw new RangeError("timeoutMs must be positive: every call needs a deadline");
    const deadline = Date.now() + timeoutMs;
    const holder = this.shared.service;
    if (holder === undefined || !method.serviceOnly || options.token !== undefined || hasAuthorization(options.headers)) {
      return this.callBy(method, request, options, deadline);
    }
    const token = await this.serviceTokenBy(holder, deadline);
    try {
      return await this.callBy(method, request, { ...options, token }, deadline);
    } catch (failure) {
      const error = fromServiceError(failure);
      if (error.code !== GrpcStatus.UNAUTHENTICATED || options.signal?.aborted) throw error;
      // Refused: a rotated or deleted-and-recreated account, or the server's keys changed. Once more.
      holder.forget(token);
      const renewed = await this.serviceTokenBy(holder, deadline);
      return this.callBy(method, request, { ...options, token: renewed }, deadline);
    }
  }

  private async callBy<Req, Res>(method: Rpc<Req, Res>, request: Req, options: CallOptions, deadline: number): Promise<Res> {
    const metadata = this.metadata(options);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.attempt(method, request, metadata, deadline, options.signal);
      } catch (failure) {
        const error = fromServiceError(failure);
        const delay = retryDelay(this.retry, method.idempotent, error.code, attempt, deadline - Date.now());
        if (delay === undefined || options.signal?.aborted) throw error;
        await sleep(delay, options.signal);
      }
    }
  }

  private attempt<Req, Res>(method: Rpc<Req, Res>, request: Req, metadata: Metadata, deadline: number, signal?: AbortSignal): Promise<Res> {
    return new Promise<Res>((resolvePromise, reject) => {
      if (this.shared.closed) {
        reject(new AuthServiceError(GrpcStatus.CANCELLED, "", "the AuthClient is closed"));
        return;
      }
      if (signal?.aborted) {
        reject(new AuthServiceError(GrpcStatus.CANCELLED, "", "the call was cancelled"));
        return;
      }
      const call = this.shared.client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        metadata,
        { deadline },
        (error: ServiceError | null, response?: Res) => {
          signal?.removeEventListener("abort", cancel);
          if (error) reject(error);
          else if (response === undefined) reject(new AuthServiceError(GrpcStatus.INTERNAL, "", "empty response"));
          else resolvePromise(response);
        },
      );
      const cancel = () => call.cancel();
      signal?.addEventListener("abort", cancel, { once: true });
    });
  }

  // AuthService
  /**
   * Starts a sign-up: e-mails a 6-digit code (or, to an address that has an account, a notice; the answer
   * is the same). `verifySignup` with the `signupId` and the code creates the user. Never retried.
   */
  signup(request: DeepPartial<SignupRequest>, options?: CallOptions): Promise<SignupResponse> {
    return this.call(RPCS.signup, SignupRequest.fromPartial(request), options);
  }

  /** Redeems the sign-up code and creates the user (`emailVerified` true). Never retried: the code works once. */
  verifySignup(request: DeepPartial<VerifySignupRequest>, options?: CallOptions): Promise<VerifySignupResponse> {
    return this.call(RPCS.verifySignup, VerifySignupRequest.fromPartial(request), options);
  }

  /** Checks the password and e-mails a 6-digit code; `verifyOtp` completes the login. Never retried. */
  login(request: DeepPartial<LoginRequest>, options?: CallOptions): Promise<LoginResponse> {
    return this.call(RPCS.login, LoginRequest.fromPartial(request), options);
  }

  verifyOtp(request: DeepPartial<VerifyOtpRequest>, options?: CallOptions): Promise<VerifyOtpResponse> {
    return this.call(RPCS.verifyOtp, VerifyOtpRequest.fromPartial(request), options);
  }

  /** Rotates the refresh token; never retried (a replayed refresh token revokes the session). */
  refresh(request: DeepPartial<RefreshRequest>, options?: CallOptions): Promise<RefreshResponse> {
    return this.call(RPCS.refresh, RefreshRequest.fromPartial(request), options);
  }

  unlockAccount(request: DeepPartial<UnlockAccountRequest>, options?: CallOptions): Promise<UnlockAccountResponse> {
    return this.call(RPCS.unlockAccount, UnlockAccountRequest.fromPartial(request), options);
  }

  /** Mails a reset code when the name is an account's; the answer is the same either way. */
  requestPasswordReset(
    request: DeepPartial<RequestPasswordResetRequest>,
    options?: CallOptions,
  ): Promise<RequestPasswordResetResponse> {
    return this.call(RPCS.requestPasswordReset, RequestPasswordResetRequest.fromPartial(request), options);
  }

  resetPassword(request: DeepPartial<ResetPasswordRequest>, options?: CallOptions): Promise<ResetPasswordResponse> {
    return this.call(RPCS.resetPassword, ResetPasswordRequest.fromPartial(request), options);
  }

  /** Redeems a new-device notice's "This wasn't me" token: ends that session and starts a reset. */
  reportSignIn(request: DeepPartial<ReportSignInRequest>, options?: CallOptions): Promise<ReportSignInResponse> {
    return this.call(RPCS.reportSignIn, ReportSignInRequest.fromPartial(request), options);
  }

  /**
   * A service account's client id and secret for a short-lived service token (throttled like Login).
   * With serviceCredentials the client calls this itself (see `serviceToken()`).
   */
  issueServiceToken(request: DeepPartial<IssueServiceTokenRequest>, options?: CallOptions): Promise<IssueServiceTokenResponse> {
    return this.call(RPCS.issueServiceToken, IssueServiceTokenRequest.fromPartial(request), options);
  }

  /**
   * Opens AuthService.WatchRevocations (services only: needs serviceCredentials) with this service's
   * token, in the client's tenant (or `options.tenant`): a stream of revocation events with no
   * deadline, to `cancel()` when done. `after`: the cursor of the last event already received; ""
   * means from now. Errors arrive on the stream's 'error' event (an UNAUTHENTICATED one makes the next
   * stream ask for a new service token). AuthGate uses this to evict its cache (see gate.ts).
   */
  async watchRevocations(
    after = "",
    options: Pick<CallOptions, "tenant" | "headers" | "timeoutMs"> = {},
  ): Promise<ClientReadableStream<WatchRevocationsResponse>> {
    const holder = this.shared.service;
    if (holder === undefined) throw new TypeError("WatchRevocations is for services: this AuthClient has no serviceCredentials");
    if (this.shared.closed) throw new AuthServiceError(GrpcStatus.CANCELLED, "", "the AuthClient is closed");
    // timeoutMs bounds getting the token only: the stream itself has no deadline.
    const token = await this.serviceTokenBy(holder, Date.now() + (options.timeoutMs ?? this.timeoutMs));
    const metadata = this.metadata({ tenant: options.tenant, headers: options.headers, token });
    const method = AuthServiceService.watchRevocations;
    const stream = this.shared.client.makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      WatchRevocationsRequest.fromPartial({ after }),
      metadata,
      {},
    );
    stream.on("error", (error: ServiceError) => {
      if (error.code === GrpcStatus.UNAUTHENTICATED) holder.forget(token); // rotated, deleted, keys changed
    });
    return stream;
  }

  /** Whether an access token is live now, and whose it is (never throws for a dead token: `active` is false). */
  introspect(request: DeepPartial<IntrospectRequest>, options?: CallOptions): Promise<IntrospectResponse> {
    return this.call(RPCS.introspect, IntrospectRequest.fromPartial(request), options);
  }

  getMe(options?: CallOptions): Promise<GetMeResponse> {
    return this.call(RPCS.getMe, GetMeRequest.fromPartial({}), options);
  }

  listSessions(options?: CallOptions): Promise<ListSessionsResponse> {
    return this.call(RPCS.listSessions, ListSessionsRequest.fromPartial({}), options);
  }

  logoutSession(request: DeepPartial<LogoutSessionRequest>, options?: CallOptions): Promise<LogoutSessionResponse> {
    return this.call(RPCS.logoutSession, LogoutSessionRequest.fromPartial(request), options);
  }

  logoutAll(request: DeepPartial<LogoutAllRequest> = {}, options?: CallOptions): Promise<LogoutAllResponse> {
    return this.call(RPCS.logoutAll, LogoutAllRequest.fromPartial(request), options);
  }

  changePassword(request: DeepPartial<ChangePasswordRequest>, options?: CallOptions): Promise<ChangePasswordResponse> {
    return this.call(RPCS.changePassword, ChangePasswordRequest.fromPartial(request), options);
  }

  /**
   * Changes the caller's profile: only the fields given (`undefined`: leave it), so
   * `updateMe({ phone: "" })` removes the phone. `updateMask` names the fields explicitly instead (AIP-134).
   */
  updateMe(
    request: { name?: string; phone?: string; updateMask?: readonly string[] },
    options?: CallOptions,
  ): Promise<UpdateMeResponse> {
    const given = (["name", "phone"] as const).filter((field) => request[field] !== undefined);
    const paths = request.updateMask ? [...request.updateMask] : [...given];
    const message = UpdateMeRequest.fromPartial({ name: request.name, phone: request.phone, updateMask: paths });
    return this.call(RPCS.updateMe, message, options);
  }

  /** Mails a code to `newEmail`; confirmEmailChange with the response's changeId makes the change. */
  changeEmail(request: DeepPartial<ChangeEmailRequest>, options?: CallOptions): Promise<ChangeEmailResponse> {
    return this.call(RPCS.changeEmail, ChangeEmailRequest.fromPartial(request), options);
  }

  confirmEmailChange(request: DeepPartial<ConfirmEmailChangeRequest>, options?: CallOptions): Promise<ConfirmEmailChangeResponse> {
    return this.call(RPCS.confirmEmailChange, ConfirmEmailChangeRequest.fromPartial(request), options);
  }

  // AdminService
  listUsers(request: DeepPartial<ListUsersRequest> = {}, options?: CallOptions): Promise<ListUsersResponse> {
    return this.call(RPCS.listUsers, ListUsersRequest.fromPartial(request), options);
  }

  listAuditEvents(request: DeepPartial<ListAuditEventsRequest> = {}, options?: CallOptions): Promise<ListAuditEventsResponse> {
    return this.call(RPCS.listAuditEvents, ListAuditEventsRequest.fromPartial(request), options);
  }

  lockUser(request: DeepPartial<LockUserRequest>, options?: CallOptions): Promise<LockUserResponse> {
    return this.call(RPCS.lockUser, LockUserRequest.fromPartial(request), options);
  }

  unlockUser(request: DeepPartial<UnlockUserRequest>, options?: CallOptions): Promise<UnlockUserResponse> {
    return this.call(RPCS.unlockUser, UnlockUserRequest.fromPartial(request), options);
  }

  /** `role`: "user" | "manager" | "admin" or a Role value. */
  setUserRole(request: { userId: string; role: AppRole | Role }, options?: CallOptions): Promise<SetUserRoleResponse> {
    return this.call(RPCS.setUserRole, { userId: request.userId, role: roleValue(request.role) }, options);
  }
}

function hasAuthorization(headers: Record<string, string> | undefined): boolean {
  return Object.keys(headers ?? {}).some((key) => key.toLowerCase() === AUTHORIZATION);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((done) => {
    const timer = setTimeout(finish, ms);
    function finish(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", finish);
      done();
    }
    signal?.addEventListener("abort", finish, { once: true });
  });
}
