// A NestJS app as a team would write it with auth-service-client: an HTTP API plus a gRPC microservice,
// every handler behind the package's AuthGuard. Started by tests/e2e/test_node_client.py with
// AUTH_ADDRESS (the auth service), HTTP_PORT, GRPC_PORT, AUTH_CACHE_TTL_MS and the service account's
// AUTH_CLIENT_ID and AUTH_CLIENT_SECRET (optional).
import "reflect-metadata";

import { join } from "node:path";

import { NestFactory } from "@nestjs/core";
import { Transport } from "@nestjs/microservices";
import type { MicroserviceOptions } from "@nestjs/microservices";
import { AuthServiceErrorFilter } from "auth-service-client";

import { AppModule } from "./app.module";

async function main(): Promise<void> {
  const app = await NestFactory.create(AppModule, { logger: ["error", "warn"] });
  app.useGlobalFilters(new AuthServiceErrorFilter()); // AuthClient errors in handlers answer like the bridge
  const grpcAddress = `127.0.0.1:${process.env["GRPC_PORT"] ?? "50071"}`;
  app.connectMicroservice<MicroserviceOptions>(
    {
      transport: Transport.GRPC,
      options: { package: "demo.v1", protoPath: join(__dirname, "..", "proto", "demo.proto"), url: grpcAddress },
    },
    { inheritAppConfig: true },
  );
  app.enableShutdownHooks();
  await app.startAllMicroservices();
  await app.listen(Number(process.env["HTTP_PORT"] ?? "3000"), "127.0.0.1");
  console.log(`nest app listening: http ${await app.getUrl()} grpc ${grpcAddress}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
