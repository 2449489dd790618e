"""Prometheus metrics: calls by method and status, call latency, security events, store errors, and the
session cache (reads by hit or miss, entries, how long ago its tail read the revocation logs).

One registry per server instance (no process-wide globals), exposed over HTTP by `serve` on
AUTH_METRICS_ADDR. Security events (logins, lockouts, OTP failures, refresh-token reuse, revocations)
share one counter labelled by the audit event type, so a new event type needs no new metric.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "auth_rpc_calls",
            "gRPC calls handled, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "auth_rpc_latency_seconds",
            "Time to answer a gRPC call, by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "auth_security_events",
            "Security events by audit type (login.failed, account.locked, ...).",
            ["type"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "auth_store_errors", "Calls that failed because the store was unavailable.", registry=self.registry
        )
        reads = Counter(
            "auth_session_cache_reads",
            "Sessions looked up for authenticated calls: hit (from the session cache) or miss (read from the store).",
            ["result"],
            registry=self.registry,
        )
        self._cache_hit, self._cache_miss = reads.labels("hit"), reads.labels("miss")
        self._cache_entries = Gauge(
            "auth_session_cache_entries", "Sessions the session cache holds.", registry=self.registry
        )
        self._cache_tail_age = Gauge(
            "auth_session_cache_tail_age_seconds",
            "Seconds since the session cache last read every tenant's revocation log (past 1 s it serves nothing).",
            registry=self.registry,
        )

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    def count_session_cache_read(self, hit: bool) -> None:
        (self._cache_hit if hit else self._cache_miss).inc()

    def watch_session_cache(self, entries: Callable[[], float], tail_age: Callable[[], float]) -> None:
        """The cache's gauges, read when /metrics is scraped (nothing on the call path)."""
        self._cache_entries.set_function(entries)
        self._cache_tail_age.set_function(tail_age)

    def count_event(self, event_type: str) -> None:
        self.events.labels(event_type).inc()

    def serve(self, addr: str) -> None:
        """Expose /metrics on HOST:PORT in a background thread."""
        host, _, port = addr.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
