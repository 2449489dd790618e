/** Test helpers: an in-process @grpc/grpc-js server playing auth.v1 on 127.0.0.1, and fake Nest contexts. */
import { Metadata, Server, ServerCredentials, status as GrpcStatus } from "@grpc/grpc-js";
import type { ExecutionContext } from "@nestjs/common";
import type { ServerUnaryCall, ServerWritableStream, sendUnaryData, UntypedServiceImplementation } from "@grpc/grpc-js";

import { statusDetails, STATUS_DETAILS_KEY } from "../src/errors";
import { AuthServiceService } from "../src/gen/auth/v1/auth";

export type Handler = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => void;
/** A server-streaming method (WatchRevocations): write responses, end, or `call.emit("error", failure(...))`. */
export type StreamHandler = (call: ServerWritableStream<unknown, unknown>) => void;

/** A failure as the auth service sends it: code, message and ErrorInfo in grpc-status-details-bin. */
export function failure(code: GrpcStatus, reason: string, message: string): { code: GrpcStatus; details: string; metadata: Metadata } {
  const metadata = new Metadata();
  metadata.set(STATUS_DETAILS_KEY, statusDetails(code, reason, message));
  return { code, details: message, metadata };
}

/** Starts a server whose AuthService methods are `handlers` (others answer UNIMPLEMENTED). */
export async function fakeAuthServer(
  handlers: Partial<Record<Exclude<keyof typeof AuthServiceService, "watchRevocations">, Handler>> & { watchRevocations?: StreamHandler },
): Promise<{ address: string; stop: () => Promise<void> }> {
  const server = new Server();
  const implementation: UntypedServiceImplementation = {};
  for (const name of Object.keys(AuthServiceService) as (keyof typeof AuthServiceService)[]) {
    const unimplemented = { code: GrpcStatus.UNIMPLEMENTED, details: "not in this fake" };
    implementation[name] =
      handlers[name] ??
      (AuthServiceService[name].responseStream
        ? (call: ServerWritableStream<unknown, unknown>) => call.emit("error", unimplemented)
        : (_call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => callback(unimplemented));
  }
  server.addService(AuthServiceService, implementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return {
    address: `127.0.0.1:${port}`,
    // forceShutdown: open streams (WatchRevocations) would hold a graceful shutdown forever.
    stop: () =>
      new Promise<void>((resolve) => {
        server.forceShutdown();
        resolve();
      }),
  };
}

export interface FakeHttp {
  request: { headers: Record<string, string | string[] | undefined>; user?: unknown };
  response: { headers: Record<string, string>; setHeader(name: string, value: string): void };
}

/** An ExecutionContext of type "http" for `handler` of `cls`. */
export function httpContext(cls: Function, handler: Function, headers: Record<string, string | string[] | undefined> = {}): ExecutionContext & { http: FakeHttp } {
  const http: FakeHttp = {
    request: { headers },
    response: {
      headers: {},
      setHeader(name: string, value: string) {
        this.headers[name.toLowerCase()] = value;
      },
    },
  };
  const context = {
    http,
    getType: () => "http",
    getClass: () => cls,
    getHandler: () => handler,
    getArgs: () => [http.request, http.response],
    getArgByIndex: (i: number) => [http.request, http.response][i],
    switchToHttp: () => ({ getRequest: () => http.request, getResponse: () => http.response, getNext: () => undefined }),
    switchToRpc: () => {
      throw new Error("not rpc");
    },
    switchToWs: () => {
      throw new Error("not ws");
    },
  };
  return context as unknown as ExecutionContext & { http: FakeHttp };
}

/** An ExecutionContext of type "rpc": `ctx` is what getContext() gives (grpc Metadata, TcpContext, ...). */
export function rpcContext(cls: Function, handler: Function, data: unknown, ctx: unknown): ExecutionContext {
  const context = {
    getType: () => "rpc",
    getClass: () => cls,
    getHandler: () => handler,
    getArgs: () => [data, ctx],
    getArgByIndex: (i: number) => [data, ctx][i],
    switchToRpc: () => ({ getData: () => data, getContext: () => ctx }),
    switchToHttp: () => {
      throw new Error("not http");
    },
    switchToWs: () => {
      throw new Error("not ws");
    },
  };
  return context as unknown as ExecutionContext;
}
