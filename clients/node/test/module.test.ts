import "reflect-metadata";

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Injectable, Module } from "@nestjs/common";
import { APP_GUARD } from "@nestjs/core";
import { Test } from "@nestjs/testing";

import { AUTH_MODULE_OPTIONS, AuthClient, AuthGate, AuthGuard, AuthModule } from "../src";
import type { AuthModuleOptions } from "../src";

@Injectable()
class Settings {
  readonly authAddress = "127.0.0.1:1";
}

@Module({ providers: [Settings], exports: [Settings] })
class SettingsModule {}

describe("AuthModule", () => {
  it("forRoot provides AuthClient, AuthGate and an AuthGuard the app registers as APP_GUARD", async () => {
    const app = await Test.createTestingModule({
      imports: [AuthModule.forRoot({ address: "127.0.0.1:1", tenant: "acme", cacheTtlMs: 500 })],
      providers: [{ provide: APP_GUARD, useClass: AuthGuard }],
    }).compile();
    try {
      assert.ok(app.get(AuthClient) instanceof AuthClient);
      assert.equal(app.get(AuthGate).cache.ttlMs, 500);
      assert.equal(app.get(AuthClient).address, "127.0.0.1:1");
    } finally {
      await app.close();
    }
  });

  it("forRootAsync builds the options from injected providers", async () => {
    const app = await Test.createTestingModule({
      imports: [
        AuthModule.forRootAsync({
          imports: [SettingsModule],
          inject: [Settings],
          useFactory: async (settings: Settings) => ({ address: settings.authAddress }),
        }),
      ],
    }).compile();
    try {
      assert.equal(app.get<AuthModuleOptions>(AUTH_MODULE_OPTIONS).address, "127.0.0.1:1");
      assert.equal(app.get(AuthGate).cache.ttlMs, 5000, "default cache TTL");
    } finally {
      await app.close();
    }
  });

  it("accepts serviceCredentials, and refuses incomplete ones and bad options at start-up", async () => {
    const app = await Test.createTestingModule({
      imports: [
        AuthModule.forRootAsync({
          useFactory: () => ({ address: "127.0.0.1:1", serviceCredentials: { clientId: "svc_orders", clientSecret: "s" } }),
        }),
      ],
    }).compile();
    try {
      assert.equal(app.get(AuthClient).hasServiceCredentials, true);
    } finally {
      await app.close();
    }
    assert.throws(() => AuthModule.forRoot({ address: "a:1", serviceCredentials: { clientId: "orders", clientSecret: "" } }), /serviceCredentials/);
    assert.throws(() => AuthModule.forRoot({ address: "a:1", serviceCredentials: {} as never }), /serviceCredentials/);
    assert.throws(() => AuthModule.forRoot({ address: "" }), /address/);
    assert.throws(() => AuthModule.forRoot({ address: "a:1", cacheTtlMs: -1 }), /cacheTtlMs/);
    assert.throws(() => AuthModule.forRoot({ address: "a:1", watchRevocations: true }), /watchRevocations.*serviceCredentials/);
    assert.throws(() => AuthModule.forRoot({ address: "a:1", watchRevocations: "yes" as never }), /watchRevocations/);
  });

});
