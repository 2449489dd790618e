"""gRPC transport: server assembly, the guard (access rules, error boundary) and the thin servicers.
Imports domain/, store/ and infra/; never http/ or runtime/."""
