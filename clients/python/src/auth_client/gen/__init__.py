"""Generated protobuf and gRPC code of auth.v1 (scripts/gen-protos)."""
