"""Thin gRPC adapters (part of api/): read the request and the guard's CallInfo, call the domain, build the response.
They never parse metadata, never touch the store, and never build error statuses themselves."""
