import { Module } from "@nestjs/common";
import { APP_GUARD } from "@nestjs/core";
import { AuthGuard, AuthModule } from "auth-service-client";

import { AccountController, DemoGrpcController, ReportsController } from "./controllers";

// The wiring the package README shows: AuthModule once, AuthGuard as the global guard. The service
// account's credentials (`auth-server service create NAME --json`) come from AUTH_CLIENT_ID and
// AUTH_CLIENT_SECRET; the e2e test also starts the app without them, to see the guard fail closed, and
// with AUTH_WATCH_REVOCATIONS=0, to see revocations within the cache TTL alone.
@Module({
  imports: [
    AuthModule.forRootAsync({
      useFactory: () => {
        const clientId = process.env["AUTH_CLIENT_ID"];
        const clientSecret = process.env["AUTH_CLIENT_SECRET"];
        return {
          address: process.env["AUTH_ADDRESS"] ?? "127.0.0.1:50051",
          // Unset: the package's default (5000 ms).
          cacheTtlMs: process.env["AUTH_CACHE_TTL_MS"] ? Number(process.env["AUTH_CACHE_TTL_MS"]) : undefined,
          serviceCredentials: clientId && clientSecret ? { clientId, clientSecret } : undefined,
          // Revocation push is on by default with serviceCredentials; "0" keeps the cache TTL alone.
          watchRevocations: clientId && clientSecret ? process.env["AUTH_WATCH_REVOCATIONS"] !== "0" : undefined,
        };
      },
    }),
  ],
  controllers: [AccountController, ReportsController, DemoGrpcController],
  providers: [{ provide: APP_GUARD, useClass: AuthGuard }],
})
export class AppModule {}
