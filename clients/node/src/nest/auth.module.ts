/**
 * AuthModule.forRoot({ address, tenant?, serviceCredentials?, cacheTtlMs? }) / forRootAsync({ useFactory,
 * inject }): a global module providing AuthClient (inject it anywhere), AuthGate, AuthGuard and
 * RolesGuard. Register the guard yourself, as auth-lib's users did: `{ provide: APP_GUARD, useClass:
 * AuthGuard }`. With `serviceCredentials` the module's AuthClient calls Introspect as this service, and
 * the guard subscribes to WatchRevocations from start-up to drop cached answers as revocations happen.
 */
import { Inject, Logger, Module } from "@nestjs/common";
import type {
  DynamicModule,
  FactoryProvider,
  ModuleMetadata,
  OnApplicationBootstrap,
  OnModuleDestroy,
  Provider,
} from "@nestjs/common";
import type { ChannelCredentials, ChannelOptions } from "@grpc/grpc-js";

import { AuthClient } from "../client";
import type { ServiceCredentials } from "../client";
import { AuthGate } from "../gate";
import { AuthGuard, RolesGuard } from "./auth.guard";

export const AUTH_MODULE_OPTIONS = Symbol("AUTH_MODULE_OPTIONS");

export interface AuthModuleOptions {
  /** host:port of the auth.v1 gRPC service (any @grpc/grpc-js target). */
  address: string;
  /** x-tenant-id used when a call carries none (none: the auth service's default tenant). */
  tenant?: string;
  /**
   * This service's own auth.v1 service account (`auth-server service create NAME --json` gives the
   * client id and secret). The guard's Introspect calls then carry this service's token (renewed
   * before it expires), which the auth service requires unless it runs with
   * AUTH_INTROSPECT_ACCESS=public. Without it, such an auth service refuses every Introspect and every
   * guarded call answers 503 (fail closed).
   */
  serviceCredentials?: ServiceCredentials;
  /**
   * How long an Introspect answer is reused, in ms. Default 5000; 0 disables. With revocation push
   * (below) revocations drop cached answers at once; while the stream is down, this is the revocation delay.
   */
  cacheTtlMs?: number;
  /**
   * Revocation push: subscribe to the auth service's WatchRevocations (from start-up) and drop cached
   * answers as revocations happen. Default: on with `serviceCredentials` (the stream is for services
   * only) and a cache; `false` keeps the TTL alone. See `AuthGate.revocations` to observe it.
   */
  watchRevocations?: boolean;
  /** Most cached answers (LRU). Default 10 000. */
  cacheSize?: number;
  /** Deadline of the guard's Introspect call in ms, retries included. Default 2000. */
  introspectTimeoutMs?: number;
  /** TLS to the auth service: `credentials.createSsl(...)` of @grpc/grpc-js. Default plaintext. */
  credentials?: ChannelCredentials;
  channelOptions?: ChannelOptions;
}

export interface AuthModuleAsyncOptions extends Pick<ModuleMetadata, "imports"> {
  useFactory: (...args: never[]) => AuthModuleOptions | Promise<AuthModuleOptions>;
  inject?: FactoryProvider["inject"];
}

/** Checks options once, at start-up, so a mistake fails the service's start rather than a request. */
export function validateOptions(options: AuthModuleOptions): AuthModuleOptions {
  if (typeof options?.address !== "string" || options.address.trim() === "") {
    throw new TypeError("AuthModule: `address` (host:port of the auth service) is required");
  }
  if (options.watchRevocations !== undefined && typeof options.watchRevocations !== "boolean") {
    throw new TypeError("AuthModule: `watchRevocations` must be a boolean");
  }
  if (options.watchRevocations === true && options.serviceCredentials === undefined) {
    throw new TypeError("AuthModule: `watchRevocations` needs `serviceCredentials` (WatchRevocations is for services only)");
  }
  if (options.serviceCredentials !== undefined) {
    const { clientId, clientSecret } = (options.serviceCredentials ?? {}) as Partial<ServiceCredentials>;
    if (typeof clientId !== "string" || clientId.trim() === "" || typeof clientSecret !== "string" || clientSecret === "") {
      throw new TypeError(
        "AuthModule: `serviceCredentials` must be { clientId, clientSecret }, both non-empty strings " +
          "(`auth-server service create NAME --json` prints them); leave the option out to send none",
      );
    }
  }
  for (const key of ["cacheTtlMs", "cacheSize", "introspectTimeoutMs"] as const) {
    const value = options[key];
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) {
      throw new RangeError(`AuthModule: \`${key}\` must be a number >= 0, got ${String(value)}`);
    }
  }
  return options;
}

const providers: Provider[] = [
  {
    provide: AuthClient,
    inject: [AUTH_MODULE_OPTIONS],
    useFactory: (options: AuthModuleOptions) =>
      new AuthClient(options.address, {
        tenant: options.tenant,
        credentials: options.credentials,
        channelOptions: options.channelOptions,
        serviceCredentials: options.serviceCredentials,
      }),
  },
  {
    provide: AuthGate,
    inject: [AUTH_MODULE_OPTIONS, AuthClient],
    useFactory: (options: AuthModuleOptions, client: AuthClient) => {
      const logger = new Logger("AuthGuard");
      return new AuthGate(client, {
        cacheTtlMs: options.cacheTtlMs,
        cacheSize: options.cacheSize,
        introspectTimeoutMs: options.introspectTimeoutMs,
        onIntrospectError: (error) => logger.warn(`auth service introspection failed: ${error.toString()}`),
        watchRevocations: options.watchRevocations,
        logger,
      });
    },
  },
  AuthGuard,
  RolesGuard,
];
const exported = [AUTH_MODULE_OPTIONS, AuthClient, AuthGate, AuthGuard, RolesGuard];

@Module({})
export class AuthModule implements OnApplicationBootstrap, OnModuleDestroy {
  constructor(
    @Inject(AuthClient) private readonly client: AuthClient,
    @Inject(AuthGate) private readonly gate: AuthGate,
  ) {}

  static forRoot(options: AuthModuleOptions): DynamicModule {
    return {
      module: AuthModule,
      global: true,
      providers: [{ provide: AUTH_MODULE_OPTIONS, useValue: validateOptions(options) }, ...providers],
      exports: exported,
    };
  }

  static forRootAsync(options: AuthModuleAsyncOptions): DynamicModule {
    return {
      module: AuthModule,
      global: true,
      imports: options.imports ?? [],
      providers: [
        {
          provide: AUTH_MODULE_OPTIONS,
          inject: options.inject ?? [],
          useFactory: async (...args: never[]) => validateOptions(await options.useFactory(...args)),
        },
        ...providers,
      ],
      exports: exported,
    };
  }

  /** Opens the revocation stream (in the background: a down auth service does not stop the start). */
  onApplicationBootstrap(): void {
    this.gate.start();
  }

  onModuleDestroy(): void {
    this.gate.close();
    this.client.close();
  }
}
