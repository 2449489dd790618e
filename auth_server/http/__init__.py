"""The HTTP/JSON bridge: browsers call the auth.v1 gRPC services through it (DESIGN.md section 3).

Modules, each owning one thing:
- routes.py: the route table, derived from the `google.api.http` annotations of the protos.
- transcode.py: HTTP request (path, query, JSON body) -> request message; response message -> JSON.
- errors.py: gRPC status + ErrorInfo/BadRequest (or the guard's AuthError) -> HTTP status and the
  `{"error": {...}}` body.
- cookies.py: the HttpOnly refresh-token cookie policy (AUTH_REFRESH_COOKIE).
- backends.py: what runs the RPC: the guarded handlers in this process (`serve`), or a gRPC server
  over grpc.aio (`bridge`, and `serve --workers`' parent).
- app.py: the ASGI application (routing, metadata, limits, CORS, /healthz, /demo).
- runner.py: uvicorn (httptools, uvloop) on its own thread beside the sync gRPC server; the bridge secret.
- static/: the demo page served at /demo (plain HTML, CSS and JavaScript, no build step).
The bridge holds no auth logic: every decision is the gRPC service's guard's, in process or over the wire.
"""
