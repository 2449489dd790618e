"""What `auth-server serve` prints once it serves: one block saying where everything is.

A newcomer starting `scripts/serve` learns from it the gRPC and HTTP addresses, the /demo page, where
the login codes go (this terminal or an SMTP server) and how to stop. The "gRPC listening on" and
"HTTP bridge listening on" lines are also what tests and scripts/bench wait for (tests/support/process.py),
so their wording stays.
"""

from __future__ import annotations

from auth_server.infra.config import Settings, redact_uri


def serving_banner(settings: Settings, grpc_addr: str, http_url: str, *, workers: int = 1) -> str:
    """The banner for a server listening on `grpc_addr` with its bridge at `http_url`."""
    store = redact_uri(settings.store_uri)
    if workers > 1:
        store += f"; {workers} worker processes, SO_REUSEPORT"
    if settings.smtp_url:
        codes = f"e-mailed through {redact_uri(settings.smtp_url)}"
    else:
        codes = "printed in this terminal, marked DEV MAIL (set AUTH_SMTP_URL to send real e-mail)"
    lines = [
        "auth-server: serving",
        f"  gRPC listening on {grpc_addr} (store: {store})",
        f"  HTTP bridge listening on {http_url}",
        f"  demo page:   {http_url}/demo",
        f"  login codes: {codes}",
    ]
    if settings.metrics_addr and workers == 1:  # --workers does not serve metrics (runtime/workers.py)
        lines.append(f"  metrics:     http://{settings.metrics_addr}/metrics")
    lines.append("  stop:        Ctrl-C (in-flight calls finish first)")
    return "\n".join(lines)
