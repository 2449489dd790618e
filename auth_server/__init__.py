"""gRPC authentication service: sessions, two-step login, session-bound tokens, multi-tenant storage.

Packages, top to bottom; each may import only the ones below it (enforced by the import-linter
contracts in pyproject.toml, run by scripts/test):

- runtime/  process entry and wiring: the `auth-server` CLI, worker processes, log set-up.
- api/      gRPC transport: server assembly, the guard (access rules, error boundary), servicers.
  http/     the HTTP/JSON bridge and /demo; it reaches the service over gRPC, never api/ directly.
- domain/   what an auth service does: accounts, sessions, admin, tokens, codes, passwords, audit.
            No grpc, no starlette, no database driver.
- store/    the Store protocol and its SQLite and MongoDB adapters.
- infra/    settings, clock, ids, keys, mail senders, metrics, proxy trust: leaf utilities.
"""
