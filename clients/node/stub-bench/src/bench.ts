// Calls per second of Introspect (a live token) against a running auth-server, through the two
// candidate stacks: protobuf-es + @connectrpc/connect-node (gRPC protocol over node:http2) and
// ts-proto + @grpc/grpc-js. Usage: [ROUNDS=3] node dist/bench.js HOST:PORT ACCESS_TOKEN [seconds] [concurrency...]
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { credentials, Metadata } from "@grpc/grpc-js";
import { AuthService, IntrospectRequestSchema } from "./gen-es/auth/v1/auth_pb";
import { AuthServiceClient, IntrospectRequest } from "./gen-tsproto/auth/v1/auth";

type Call = () => Promise<boolean>;

interface Rate {
  perSecond: number;
  cpuMicrosPerCall: number; // this (client) process's CPU time per call, user + system
}

async function rate(call: Call, seconds: number, concurrency: number): Promise<Rate> {
  for (let i = 0; i < 50; i++) await call(); // warm-up: connection, JIT
  const end = Date.now() + seconds * 1000;
  let done = 0;
  const worker = async () => {
    while (Date.now() < end) {
      if (!(await call())) throw new Error("token not active");
      done++;
    }
  };
  const started = process.hrtime.bigint();
  const cpu = process.cpuUsage();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const used = process.cpuUsage(cpu);
  return {
    perSecond: done / (Number(process.hrtime.bigint() - started) / 1e9),
    cpuMicrosPerCall: (used.user + used.system) / done,
  };
}

async function main(): Promise<void> {
  const [address, token, secondsArg, ...concurrencyArgs] = process.argv.slice(2);
  if (!address || !token) throw new Error("usage: bench.js HOST:PORT ACCESS_TOKEN [seconds] [concurrency...]");
  const seconds = Number(secondsArg ?? "5");
  const rounds = Number(process.env.ROUNDS ?? "3");
  const levels = concurrencyArgs.length ? concurrencyArgs.map(Number) : [1, 16];

  const connect = createClient(AuthService, createGrpcTransport({ baseUrl: `http://${address}` }));
  const connectCall: Call = async () =>
    (await connect.introspect(create(IntrospectRequestSchema, { accessToken: token }), { timeoutMs: 5000 })).active;

  const grpcJs = new AuthServiceClient(address, credentials.createInsecure());
  const grpcJsCall: Call = () =>
    new Promise((resolve, reject) => {
      const request: IntrospectRequest = { accessToken: token };
      grpcJs.introspect(request, new Metadata(), { deadline: Date.now() + 5000 }, (error, response) =>
        error ? reject(error) : resolve(response.active),
      );
    });

  for (const concurrency of levels) {
    // Interleave the stacks (A B A B) so a drifting server does not favour one.
    const results: Record<string, Rate[]> = { "connect-node": [], "grpc-js": [] };
    for (let round = 0; round < rounds; round++) {
      results["connect-node"].push(await rate(connectCall, seconds, concurrency));
      results["grpc-js"].push(await rate(grpcJsCall, seconds, concurrency));
    }
    for (const [stack, values] of Object.entries(results)) {
      const calls = values.map((v) => v.perSecond.toFixed(0)).join(", ");
      const cpu = values.map((v) => v.cpuMicrosPerCall.toFixed(0)).join(", ");
      console.log(`concurrency ${concurrency}: ${stack.padEnd(12)} ${calls} calls/s; client CPU ${cpu} µs/call`);
    }
  }
  grpcJs.close();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
