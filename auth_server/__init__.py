"""gRPC authentication service: sessions, two-step login, session-bound tokens, multi-tenant storage."""
