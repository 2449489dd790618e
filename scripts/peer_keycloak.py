"""`scripts/bench --peer keycloak`: this service and Keycloak side by side, in one run (issue 15, part 3).

Keycloak's server distribution (org.keycloak:keycloak-quarkus-dist, KC_VERSION, fetched from Maven Central
by `scripts/provision keycloak` into .cache/keycloak with the path of a JDK >= 21) runs as `kc.sh start-dev`
(dev mode: its embedded H2 file store, HTTP, no caching of themes) on free loopback ports, with a fresh
data directory each run. A realm is set up like this service: refresh tokens rotate and a reused one is
refused (revokeRefreshToken, refreshTokenMaxReuse 0), access tokens live 900 s, a public client allows
the password grant, one test user. This service runs as `auth-server serve` on a SQLite file, with users and
sessions written as scripts/bench.py writes them.

Both servers run on CPU 0 (taskset; the JVM then sees one processor), every load generator on CPU 1, at
the same concurrency; the scenarios interleave within each round and every ratio is of medians:
- read: GetMe over gRPC (ghz) and the bridge's GET /api/v1/auth/me (vegeta) vs Keycloak's `userinfo`
  (vegeta), 200 sessions a side, 50 workers;
- refresh with rotation: 50 chains, each sending the refresh token the previous answer returned (ghz and
  vegeta cannot chain, so `chains` below, a small asyncio driver, runs both sides alike): ours over gRPC
  and over the bridge vs Keycloak's token endpoint (grant_type=refresh_token);
- login, normalised by each side's own single-thread hash rate on CPU 0: ours Login (ghz) over bcrypt's
  checkpw at the configured cost; Keycloak's password grant (vegeta) over its own hash at the user's stored
  settings (Keycloak 26 defaults to argon2id, 5 iterations, 7 MiB; pbkdf2 if the realm says so), timed in
  the same JDK with the BouncyCastle generator Keycloak calls. 8 workers a side (a hash-bound call at 50 in
  flight only queues; ours would refuse past its wait limit).
Keycloak is primed first (JIT warm-up): bursts of each scenario until a burst is no faster than the best
before it by more than PRIME_GAIN, twice running; ours gets the same treatment. At the end: resident
memory (RSS of each process tree) and restart -> first authenticated read with a token issued before.

Writes bench/peer-keycloak.json (ratios ours / Keycloak, raw figures) and prints a table (`render`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtools import REPO, free_port, log

if TYPE_CHECKING:
    from bench import Bench, Profile, Result, Server

KC_VERSION = "26.7.3"
KC_HOME = REPO / ".cache" / "keycloak" / f"keycloak-{KC_VERSION}"
JAVA_HOME_FILE = REPO / ".cache" / "keycloak" / "java-home"
REALM = "bench"
CLIENT = "bench"
USER = "bench"
READ_SESSIONS = 200
CHAINS = 50
LOGIN_CONCURRENCY = 8
PRIME_GAIN = 0.05  # a burst this much faster than the best before it counts as still warming up
# Keycloak is primed at least this long per scenario, however flat its first bursts look: in the first
# recorded run its userinfo rate kept rising through the measured rounds (582, 753, 813 /s) after the
# flatness rule had stopped priming early (the JIT compiles in tiers, minutes apart).
KEYCLOAK_PRIME_SECONDS = 60.0
ME = "/api/v1/auth/me"
REFRESH = "/api/v1/auth/refresh"

RATIOS = {  # key: (ours scenario or figure, Keycloak's, target op, target value); ours / Keycloak
    "read_grpc_ratio": (">=", 2.0),
    "read_http_ratio": (">=", 1.5),
    "refresh_grpc_ratio": ("info", None),
    "refresh_http_ratio": (">=", 3.0),
    "login_hash_normalised_ratio": ("info", None),
    "memory_ratio": ("info", None),
    "restart_ratio": ("info", None),
    # Information: grpcio's own no-op rate (the stock Health servicer, no guard) over `userinfo`. No guarded
    # gRPC call can be faster than this, so it bounds what read_grpc_ratio can reach on this machine.
    "grpc_ceiling_ratio": ("info", None),
}

HASH_RATE_JAVA = """\
import java.security.SecureRandom;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;
import org.bouncycastle.crypto.generators.Argon2BytesGenerator;
import org.bouncycastle.crypto.params.Argon2Parameters;

// One thread hashing a password as Keycloak's Argon2PasswordHashProvider / Pbkdf2PasswordHashProvider do.
// args: algorithm iterations memoryKiB parallelism hashLength warmSeconds seconds; prints hashes per second.
public class HashRate {
  public static void main(String[] a) throws Exception {
    String alg = a[0];
    int iterations = Integer.parseInt(a[1]), memory = Integer.parseInt(a[2]);
    int parallelism = Integer.parseInt(a[3]), length = Integer.parseInt(a[4]);
    double warm = Double.parseDouble(a[5]), seconds = Double.parseDouble(a[6]);
    byte[] salt = new byte[16];
    new SecureRandom().nextBytes(salt);
    char[] password = "correct horse battery staple".toCharArray();
    Runnable one;
    if (alg.equals("argon2")) {
      Argon2Parameters params = new Argon2Parameters.Builder(Argon2Parameters.ARGON2_id)
          .withVersion(Argon2Parameters.ARGON2_VERSION_13).withSalt(salt).withParallelism(parallelism)
          .withMemoryAsKB(memory).withIterations(iterations).build();
      one = () -> {
        Argon2BytesGenerator gen = new Argon2BytesGenerator();
        gen.init(params);
        gen.generateBytes(password, new byte[length]);
      };
    } else {
      String jca = alg.equals("pbkdf2-sha512") ? "PBKDF2WithHmacSHA512" : "PBKDF2WithHmacSHA256";
      int bits = alg.equals("pbkdf2-sha512") ? 512 : 256;
      one = () -> {
        try {
          PBEKeySpec spec = new PBEKeySpec(password, salt, iterations, bits);
          SecretKeyFactory.getInstance(jca).generateSecret(spec).getEncoded();
        } catch (Exception e) { throw new RuntimeException(e); }
      };
    }
    long end = System.nanoTime() + (long) (warm * 1e9);
    while (System.nanoTime() < end) one.run();
    long start = System.nanoTime();
    end = start + (long) (seconds * 1e9);
    int n = 0;
    while (System.nanoTime() < end) { one.run(); n++; }
    System.out.println(n / ((System.nanoTime() - start) / 1e9));
  }
}
"""

BCRYPT_RATE_PY = """\
import sys, time, bcrypt
rounds, warm, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
hashed = bcrypt.hashpw(b"correct horse battery staple", bcrypt.gensalt(rounds))
end = time.monotonic() + warm
while time.monotonic() < end:
    bcrypt.checkpw(b"correct horse battery staple", hashed)
start = time.monotonic(); n = 0
while time.monotonic() < start + seconds:
    bcrypt.checkpw(b"correct horse battery staple", hashed); n += 1
print(n / (time.monotonic() - start))
"""


# ---------------------------------------------------------------------------------------------
# The result file: ratios and the table (pure; tests/e2e/test_bench.py runs these on a recorded file)
# ---------------------------------------------------------------------------------------------


def _quotient(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a != a or b != b or b == 0:
        return None
    return a / b


def _div(a: float | None, b: float | None) -> float | None:
    q = _quotient(a, b)
    return None if q is None else round(q, 3)


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """Ours / Keycloak, from the medians in `results` (its "scenarios", "hash", "memory_mib", "restart_s")."""
    s = {k: v["rps"] for k, v in results["scenarios"].items()}
    h = results["hash"]
    ours_login = _quotient(s.get("ours_login"), h["ours"]["rps"])
    kc_login = _quotient(s.get("kc_login"), h["keycloak"]["rps"])
    return {
        "read_grpc_ratio": _div(s.get("ours_getme"), s.get("kc_userinfo")),
        "read_http_ratio": _div(s.get("ours_bridge_me"), s.get("kc_userinfo")),
        "refresh_grpc_ratio": _div(s.get("ours_refresh_grpc"), s.get("kc_refresh")),
        "refresh_http_ratio": _div(s.get("ours_refresh_http"), s.get("kc_refresh")),
        "login_hash_normalised_ratio": _div(ours_login, kc_login),
        "memory_ratio": _div(results["memory_mib"]["ours"], results["memory_mib"]["keycloak"]),
        "restart_ratio": _div(results["restart_s"]["ours"], results["restart_s"]["keycloak"]),
        "grpc_ceiling_ratio": _div(s.get("ours_health"), s.get("kc_userinfo")),
    }


def _ok(key: str, value: float | None) -> str:
    op, target = RATIOS[key]
    if op == "info" or value is None:
        return ""
    return "ok" if value >= target else "MISS"


def render(results: dict[str, Any]) -> str:
    """The issue's table from a result file: this service, Keycloak, ratio (ours / Keycloak), target."""
    meta, sc, h = results["meta"], results["scenarios"], results["hash"]
    r = ratios(results)

    def rps(key: str, p50: bool = False) -> str:
        if key not in sc:
            return "-"
        text = f"{sc[key]['rps']:.0f} rps"
        return text + (f", p50 {sc[key]['p50_ms']:.0f} ms" if p50 else "")

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    def target(key: str) -> str:
        op, value = RATIOS[key]
        return "" if op == "info" else f"{op} {value} {_ok(key, r[key])}"

    def norm(side: str, key: str) -> str:
        return num(_div(sc[key]["rps"], h[side]["rps"]) if key in sc else None)

    refresh_ours = f"{rps('ours_refresh_grpc')[:-4]} / {rps('ours_refresh_http')}"
    refresh_ratio = f"{num(r['refresh_grpc_ratio'])} / {num(r['refresh_http_ratio'])}"
    refresh_target = f"{target('refresh_http_ratio')} (HTTP)"
    lines = [
        f"{meta['date']} · {meta['cores']} cores ({meta['cpu_model']}) · Keycloak {meta['keycloak']} "
        f"(start-dev, H2) on Java {meta['java']} · this service on SQLite · {meta['rounds']} rounds · "
        f"{meta['seconds']} s",
        f"pinning: {meta['pinning']}",
        "",
        "| scenario | this service | Keycloak | ratio | target |",
        "|---|---:|---:|---:|---|",
        f"| authenticated read over gRPC (`GetMe`) vs `userinfo` | {rps('ours_getme')} | {rps('kc_userinfo')} "
        f"| **{num(r['read_grpc_ratio'])}** | {target('read_grpc_ratio')} |",
        f"| gRPC no-op ceiling (`Health/Check`, stock servicer, no guard) vs `userinfo` | {rps('ours_health')} "
        f"| {rps('kc_userinfo')} | {num(r['grpc_ceiling_ratio'])} | bounds the row above |",
        f"| authenticated read over the HTTP bridge (`GET {ME}`) vs `userinfo` | {rps('ours_bridge_me', True)} "
        f"| {rps('kc_userinfo', True)} | **{num(r['read_http_ratio'])}** | {target('read_http_ratio')} |",
        f"| refresh with rotation, {CHAINS} chains, gRPC / HTTP | {refresh_ours} | {rps('kc_refresh')} "
        f"| {refresh_ratio} | {refresh_target} |",
        f"| login relative to its own hash's single-thread rate | {norm('ours', 'ours_login')} "
        f"| {norm('keycloak', 'kc_login')} | {num(r['login_hash_normalised_ratio'])} | |",
        f"| resident memory after the runs | {results['memory_mib']['ours']:.0f} MiB "
        f"| {results['memory_mib']['keycloak']:.0f} MiB | {num(r['memory_ratio'])} | |",
        f"| restart → first authenticated read | {results['restart_s']['ours']:.1f} s "
        f"| {results['restart_s']['keycloak']:.1f} s | {num(r['restart_ratio'])} | |",
        "",
        f"hashes, one thread on CPU 0: ours {h['ours']['label']} {h['ours']['rps']:.1f}/s · "
        f"Keycloak {h['keycloak']['label']} {h['keycloak']['rps']:.1f}/s",
        f"logins: ours {rps('ours_login')}, Keycloak {rps('kc_login')} ({LOGIN_CONCURRENCY} workers a side)",
        "errors: " + ", ".join(f"{k} {v['errors']}/{v['calls']}" for k, v in sc.items()),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Refresh chains: a small asyncio driver, the same for both sides (run as its own pinned process)
# ---------------------------------------------------------------------------------------------


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.counting = False

    def ok(self, seconds: float) -> None:
        if self.counting:
            self.latencies.append(seconds)

    def fail(self, kind: str) -> None:
        if self.counting:
            self.errors[kind] = self.errors.get(kind, 0) + 1


async def _http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a kept-alive connection; (status, body). Content-Length or chunked bodies."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        return status, await reader.readexactly(int(headers[b"content-length"]))
    body = b""
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, body
            body += chunk[:-2]
    return status, body


async def _http_chain(url: str, flavour: str, token: str, tally: _Tally, stop: asyncio.Event) -> str:
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        while not stop.is_set():
            if flavour == "keycloak":
                body = urllib.parse.urlencode(
                    {"grant_type": "refresh_token", "client_id": CLIENT, "refresh_token": token}
                ).encode()
                kind, field = b"application/x-www-form-urlencoded", "refresh_token"
            else:
                body, kind, field = json.dumps({"refreshToken": token}).encode(), b"application/json", "refreshToken"
            request = (
                f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {len(body)}\r\n".encode()
                + b"Content-Type: "
                + kind
                + b"\r\nUser-Agent: bench-chains\r\n\r\n"
                + body
            )
            sent = time.perf_counter()
            try:
                status, reply = await asyncio.wait_for(_http_exchange(reader, writer, request), 10)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                tally.fail(type(exc).__name__)
                return ""  # the chain cannot go on: the answer (and maybe its new token) is lost
            if status != 200:
                tally.fail(f"HTTP {status} {reply[:80].decode(errors='replace')}")
                return ""
            token = json.loads(reply)[field]
            tally.ok(time.perf_counter() - sent)
    finally:
        writer.close()
    return token


async def _grpc_chains(target: str, tokens: list[str], tally: _Tally, stop: asyncio.Event) -> list[str]:
    import grpc

    from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:  # one connection, as ghz --connections=1
        stub = auth_pb2_grpc.AuthServiceStub(channel)

        async def chain(token: str) -> str:
            while not stop.is_set():
                sent = time.perf_counter()
                try:
                    reply = await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=token), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    tally.fail(f"{exc.code().name} {exc.details()}"[:100])
                    return ""
                token = reply.refresh_token
                tally.ok(time.perf_counter() - sent)
            return token

        return list(await asyncio.gather(*(chain(t) for t in tokens)))


async def _run_chains(args: argparse.Namespace, tokens: list[str]) -> dict[str, Any]:
    import resource

    tally, stop = _Tally(), asyncio.Event()
    if args.mode == "grpc":
        task = asyncio.ensure_future(_grpc_chains(args.target, tokens, tally, stop))
    else:
        task = asyncio.ensure_future(
            asyncio.gather(*(_http_chain(args.target, args.flavour, t, tally, stop) for t in tokens))
        )
    await asyncio.sleep(args.warmup)
    tally.counting = True
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.sleep(args.duration)
    stop.set()
    final = list(await task)  # calls in flight at the end complete and count (as ghz --duration-stop=wait)
    span = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    lat = sorted(tally.latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {
        "ok": len(lat),
        "errors": sum(tally.errors.values()),
        "error_kinds": tally.errors,
        "seconds": span,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
        "client_cpu": (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / span,
        "chains_alive": sum(1 for t in final if t),
        "tokens": final,
    }


def chains_main(argv: list[str]) -> int:
    """`peer_keycloak.py chains`: run refresh chains for warmup+duration s; JSON (with the last tokens) out."""
    parser = argparse.ArgumentParser(prog="peer_keycloak.py chains")
    parser.add_argument("--mode", choices=("grpc", "http"), required=True)
    parser.add_argument("--flavour", choices=("ours", "keycloak"), default="ours", help="HTTP request/answer shape")
    parser.add_argument("--target", required=True, help="host:port (grpc) or the token endpoint's URL (http)")
    parser.add_argument("--tokens", type=Path, required=True, help="JSON list: one refresh token per chain")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    tokens = [t for t in json.loads(args.tokens.read_text()) if t]
    result = asyncio.run(_run_chains(args, tokens))
    args.out.write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# Keycloak as a process
# ---------------------------------------------------------------------------------------------


def java_home() -> Path:
    home = os.environ.get("KC_JAVA_HOME") or (JAVA_HOME_FILE.read_text().strip() if JAVA_HOME_FILE.exists() else "")
    if not home or not (Path(home) / "bin" / "java").exists():
        raise SystemExit("no JDK >= 21 recorded for Keycloak: run scripts/provision keycloak (or set KC_JAVA_HOME)")
    return Path(home)


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total / 1024


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
        for kid in kids:
            out += [kid, *_children(kid)]
    return out


class Keycloak:
    """`kc.sh start-dev` pinned to `cpus`, on free loopback ports, its H2 store under the distribution."""

    def __init__(self, log_dir: Path, cpus: str) -> None:
        self.cpus = cpus
        self.log_path = log_dir / "keycloak.log"
        self.port = free_port()
        self.management_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin_password = secrets.token_urlsafe(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self.java = str(java_home())

    def start(self, fresh: bool) -> float:
        """Start it; with `fresh`, on a new H2 store. Returns the seconds until it answers."""
        if fresh:
            import shutil

            shutil.rmtree(KC_HOME / "data", ignore_errors=True)
        env = {
            **os.environ,
            "JAVA_HOME": self.java,
            "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password,
        }
        cmd = [
            "taskset", "-c", self.cpus, str(KC_HOME / "bin" / "kc.sh"), "start-dev",
            "--http-host=127.0.0.1", f"--http-port={self.port}", f"--http-management-port={self.management_port}",
        ]  # fmt: skip
        t0 = time.monotonic()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(900)  # a first start re-augments (minutes on one busy core)
        return time.monotonic() - t0

    def wait_ready(self, timeout: float) -> None:
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc is None or self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.base}/realms/master", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-1500:]
        self.stop()
        raise RuntimeError(f"Keycloak did not come up: {tail}")

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *_children(self.proc.pid)]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        kids = _children(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)  # kc.sh passes it to the JVM
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for pid in [*kids, self.proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait()

    # ---- the realm --------------------------------------------------------------------------------

    def admin_token(self) -> str:
        import httpx

        reply = httpx.post(
            f"{self.base}/realms/master/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": "admin",
                "password": self.admin_password,
            },
            timeout=60,
        )
        reply.raise_for_status()
        return str(reply.json()["access_token"])

    def create_realm(self, password: str) -> dict[str, Any]:
        """The bench realm; returns the stored password credential's hash settings."""
        import httpx

        headers = {"Authorization": f"Bearer {self.admin_token()}"}
        realm = {
            "realm": REALM,
            "enabled": True,
            "revokeRefreshToken": True,  # rotation
            "refreshTokenMaxReuse": 0,  # a refresh token used twice is refused
            "accessTokenLifespan": 900,
            "ssoSessionIdleTimeout": 7 * 86400,  # as this service's AUTH_REFRESH_TTL: chains never time out
            "ssoSessionMaxLifespan": 7 * 86400,
            "clients": [  # public, password grant only: the bench logs in with username and password
                {
                    "clientId": CLIENT,
                    "publicClient": True,
                    "directAccessGrantsEnabled": True,
                    "standardFlowEnabled": False,
                }
            ],
            "users": [
                {
                    "username": USER,
                    "enabled": True,
                    "email": "bench@bench.example",
                    "emailVerified": True,
                    "firstName": "Bench",
                    "lastName": "User",
                    "credentials": [{"type": "password", "value": password, "temporary": False}],
                }
            ],
        }
        with httpx.Client(base_url=self.base, headers=headers, timeout=60) as client:
            client.post("/admin/realms", json=realm).raise_for_status()
            user = client.get(f"/admin/realms/{REALM}/users", params={"username": USER}).json()[0]
            creds = client.get(f"/admin/realms/{REALM}/users/{user['id']}/credentials").json()
            stored = client.get(f"/admin/realms/{REALM}").json()
        data: dict[str, Any] = json.loads(creds[0]["credentialData"])
        keys = ("revokeRefreshToken", "refreshTokenMaxReuse", "accessTokenLifespan")
        self.realm_settings = {k: stored.get(k) for k in keys}
        return data

    @property
    def token_url(self) -> str:
        return f"{self.base}/realms/{REALM}/protocol/openid-connect/token"

    @property
    def userinfo_url(self) -> str:
        return f"{self.base}/realms/{REALM}/protocol/openid-connect/userinfo"

    def login_form(self, password: str) -> dict[str, str]:
        form = {"grant_type": "password", "client_id": CLIENT, "username": USER, "password": password}
        return form | {"scope": "openid"}  # Keycloak's userinfo answers only tokens with the openid scope

    def logins(self, password: str, count: int) -> list[dict[str, Any]]:
        """`count` password grants (8 at a time): each a new session's tokens."""
        from concurrent.futures import ThreadPoolExecutor

        import httpx

        with httpx.Client(timeout=60) as client:

            def one(_: int) -> dict[str, Any]:
                reply = client.post(self.token_url, data=self.login_form(password))
                reply.raise_for_status()
                return dict(reply.json())

            with ThreadPoolExecutor(8) as pool:
                return list(pool.map(one, range(count)))


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


class PeerBench:
    def __init__(self, bench: Bench, profile: Profile, args: argparse.Namespace) -> None:
        self.b = bench
        self.p = profile
        self.args = args
        self.tmp = bench.tmp
        self.priming: dict[str, list[float]] = {}
        self.values: dict[str, Any] = {}

    # ---- load helpers -----------------------------------------------------------------------------

    def vegeta_run(
        self, server: Any, targets: Path, duration: float, concurrency: int = 50, warm: bool = True
    ) -> Result:
        """vegeta on `targets` (after a warm-up run), with the server's CPU accounted (Bench.accounted)."""
        vegeta = self.b.vegeta
        assert vegeta is not None
        self.b.quiet()
        if warm and self.p.warmup:
            proc, output = vegeta.start(targets, self.p.warmup, concurrency)
            vegeta.finish(proc, output, self.p.warmup + 60)

        def run() -> Result:
            proc, output = vegeta.start(targets, duration, concurrency)
            return vegeta.finish(proc, output, duration + 60)

        return self.b.accounted([server], run)

    def post_targets(self, url: str, form: dict[str, str]) -> Path:
        body = self.tmp / f"body-{secrets.token_hex(4)}.txt"
        body.write_text(urllib.parse.urlencode(form))
        path = self.tmp / f"targets-{secrets.token_hex(4)}.txt"
        path.write_text(f"POST {url}\nContent-Type: application/x-www-form-urlencoded\n@{body}\n\n")
        return path

    def chains(
        self, server: Any, mode: str, flavour: str, target: str, tokens: list[str], duration: float, warmup: float
    ) -> tuple[Result, list[str]]:
        """One run of the chain driver on LOAD_CPU; returns its result and each chain's latest token."""
        from bench import LOAD_CPU, Result

        token_file = self.tmp / f"chains-{secrets.token_hex(4)}.json"
        token_file.write_text(json.dumps(tokens))
        out = self.tmp / f"chains-{secrets.token_hex(4)}.out.json"
        cmd = [
            "taskset", "-c", LOAD_CPU, sys.executable, str(Path(__file__)), "chains", f"--mode={mode}",
            f"--flavour={flavour}", f"--target={target}", f"--tokens={token_file}", f"--warmup={warmup:g}",
            f"--duration={duration:g}", f"--out={out}",
        ]  # fmt: skip
        self.b.quiet()
        holder: dict[str, Any] = {}

        def run() -> Result:
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=duration + warmup + 120)
            if done.returncode != 0:
                raise RuntimeError(f"chain driver failed: {done.stderr[-800:]}")
            data = json.loads(out.read_text())
            holder.update(data)
            return Result(
                rps=data["ok"] / data["seconds"],
                p50=data["p50_ms"],
                p95=data["p95_ms"],
                p99=data["p99_ms"],
                mean=data["mean_ms"],
                count=data["ok"] + data["errors"],
                errors=data["errors"],
                error_kinds=data["error_kinds"],
            )

        result = self.b.accounted([server], run)
        if holder["client_cpu"] > 0.9:
            log(f"    (chain driver used {holder['client_cpu']:.0%} of its core: the load side may bound this run)")
        self.values.setdefault("chain_driver_cpu", {}).setdefault(f"{flavour}_{mode}", []).append(
            round(holder["client_cpu"], 2)
        )
        if holder["chains_alive"] < len(tokens):
            log(f"    ({len(tokens) - holder['chains_alive']} chains broke: {holder['error_kinds']})")
        return result, holder["tokens"]

    def prime(self, name: str, burst: Callable[[], float], most: int, least: int = 0) -> None:
        """Bursts until one is no more than PRIME_GAIN faster than the best before it, twice running, and
        at least `least` bursts."""
        rates: list[float] = []
        flat = 0
        while len(rates) < most:
            rate = burst()
            flat = flat + 1 if rates and rate <= max(rates) * (1 + PRIME_GAIN) else 0
            rates.append(rate)
            if flat >= 2 and len(rates) >= least:
                break
        self.priming[name] = [round(r, 1) for r in rates]
        log(f"  primed {name:<22} {' '.join(f'{r:.0f}' for r in rates)} /s")

    def hash_rate_ours(self, rounds: int, seconds: float) -> float:
        from bench import SERVER_CPU

        self.b.quiet()
        cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-c", BCRYPT_RATE_PY, str(rounds), "2", f"{seconds:g}"]
        return float(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 120).stdout)

    def hash_rate_keycloak(self, params: dict[str, Any], seconds: float) -> float:
        from bench import SERVER_CPU

        source = self.tmp / "HashRate.java"
        source.write_text(HASH_RATE_JAVA)
        jars = sorted((KC_HOME / "lib" / "lib" / "main").glob("org.bouncycastle.bcprov-*.jar"))
        extra = params.get("additionalParameters") or {}

        def first(key: str, default: str) -> str:
            return str((extra.get(key) or [default])[0])

        cmd = [
            "taskset", "-c", SERVER_CPU, f"{self.keycloak.java}/bin/java", "-cp", ":".join(map(str, jars)), str(source),
            params["algorithm"], str(params["hashIterations"]), first("memory", "0"), first("parallelism", "1"),
            first("hashLength", "32"), "5", f"{seconds:g}",
        ]  # fmt: skip
        self.b.quiet()
        return float(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 180).stdout)

    # ---- the run ------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from bench import PASSWORD, SERVER_CPU, Fixtures, write_records

        b = self.b
        b.secret = secrets.token_urlsafe(48)
        b.rounds = self.args.bcrypt_rounds
        store_uri = b.store_uri("peer")
        # Refresh tokens in the bridge's JSON (a non-browser client); no per-user session cap (Keycloak has
        # none by default; the fixtures open 6 sessions per user). Access tokens live 3600 s (base_env) so the
        # setup's outlive the run; Keycloak's live 900 s and are renewed (kc_read_tokens).
        env = b.base_env(store_uri) | {"AUTH_REFRESH_COOKIE": "false", "AUTH_MAX_SESSIONS_PER_USER": "0"}
        for kv in self.args.env:
            env.update([kv.split("=", 1)])

        log(f"Keycloak {KC_VERSION}: start-dev on CPU {SERVER_CPU} (fresh H2 store) ...")
        self.keycloak = kc = Keycloak(self.tmp, SERVER_CPU)
        first_start = kc.start(fresh=True)
        log(f"  up in {first_start:.1f}s; realm '{REALM}' ...")
        hash_params = kc.create_realm(PASSWORD)
        log(f"  realm {kc.realm_settings}; password hash {hash_params}")

        log("this service: users and sessions (SQLite) ...")
        fx = Fixtures(env, 1)
        users = fx.users("peer", 50)
        read_sessions, read_issued = fx.open_sessions(users, READ_SESSIONS)
        chain_sessions, chain_issued = fx.open_sessions(users, 2 * CHAINS)
        write_records(store_uri, users, read_sessions + chain_sessions)
        ours = b.server(env, "peer", cpus=SERVER_CPU)
        our_tokens = [t.access_token for t in read_issued]
        our_chains = {
            "grpc": [t.refresh_token for t in chain_issued[:CHAINS]],
            "http": [t.refresh_token for t in chain_issued[CHAINS:]],
        }

        log(f"Keycloak: {READ_SESSIONS} + {CHAINS} password logins ...")
        self.kc_read_tokens(PASSWORD)
        kc_chains = [t["refresh_token"] for t in kc.logins(PASSWORD, CHAINS)]

        vegeta = b.vegeta
        assert vegeta is not None
        ours_me = vegeta.targets(ours.http_url + ME, our_tokens)
        login_data = [{"username_or_email": u.username, "password": PASSWORD} for u in users]
        kc_login_targets = self.post_targets(kc.token_url, kc.login_form(PASSWORD))

        burst, most = (3.0, 6) if self.p.name == "quick" else (5.0, 24)
        least = 0 if self.p.name == "quick" else int(KEYCLOAK_PRIME_SECONDS / burst)
        log(f"priming (JIT warm-up): {burst:g} s bursts until the rate stops rising (at most {most})")

        def kc_userinfo() -> float:
            return self.vegeta_run(kc, self.kc_userinfo_targets(), burst, warm=False).rps

        def kc_login() -> float:
            return self.vegeta_run(kc, kc_login_targets, burst, LOGIN_CONCURRENCY, False).rps

        self.prime("kc_userinfo", kc_userinfo, most, least)
        self.prime("kc_refresh", lambda: self._prime_chains(kc, "keycloak", kc_chains, burst), most, least)
        self.prime("kc_login", kc_login, most, least)
        self.prime("ours_bridge_me", lambda: self.vegeta_run(ours, ours_me, burst, warm=False).rps, most)
        self.prime("ours_refresh_grpc", lambda: self._prime_chains(ours, "grpc", our_chains["grpc"], burst), most)
        self.prime("ours_refresh_http", lambda: self._prime_chains(ours, "http", our_chains["http"], burst), most)

        hashes: dict[str, list[float]] = {"ours": [], "keycloak": []}
        for r in range(self.p.rounds):
            log(f"round {r + 1}/{self.p.rounds}")
            b.record("ours_getme", "GetMe (gRPC, ghz)", b.measure(ours, "auth.v1.AuthService/GetMe", tokens=our_tokens))
            ceiling = b.measure(ours, "grpc.health.v1.Health/Check")
            b.record("ours_health", "Health/Check (gRPC, ghz): the stack's ceiling", ceiling)
            b.record("ours_bridge_me", f"bridge GET {ME} (vegeta)", self.vegeta_run(ours, ours_me, self.p.measure))
            kc_me = self.kc_userinfo_targets()
            b.record("kc_userinfo", "Keycloak userinfo (vegeta)", self.vegeta_run(kc, kc_me, self.p.measure))
            for mode in ("grpc", "http"):
                target = ours.target if mode == "grpc" else ours.http_url + REFRESH
                result, our_chains[mode] = self.chains(
                    ours, mode, "ours", target, our_chains[mode], self.p.measure, self.p.warmup
                )
                b.record(f"ours_refresh_{mode}", f"Refresh, {CHAINS} chains ({mode})", result)
            result, kc_chains = self.chains(
                kc, "http", "keycloak", kc.token_url, kc_chains, self.p.measure, self.p.warmup
            )
            b.record("kc_refresh", f"Keycloak refresh_token grant, {CHAINS} chains", result)
            b.record(
                "ours_login",
                f"Login (bcrypt cost {b.rounds}), {LOGIN_CONCURRENCY} workers",
                b.measure(
                    ours,
                    "auth.v1.AuthService/Login",
                    data=login_data,
                    concurrency=LOGIN_CONCURRENCY,
                    duration=self.p.login_measure,
                ),
            )
            b.record(
                "kc_login",
                f"Keycloak password grant, {LOGIN_CONCURRENCY} workers",
                self.vegeta_run(kc, kc_login_targets, self.p.login_measure, LOGIN_CONCURRENCY),
            )
            hashes["ours"].append(self.hash_rate_ours(b.rounds, self.p.login_measure / 2))
            hashes["keycloak"].append(self.hash_rate_keycloak(hash_params, self.p.login_measure / 2))
            log(f"  hash rates, one thread: bcrypt {hashes['ours'][-1]:.1f}/s, Keycloak {hashes['keycloak'][-1]:.1f}/s")

        memory = {"ours": round(rss_mib(ours.pids()), 1), "keycloak": round(rss_mib(kc.pids()), 1)}
        log(f"resident memory after the runs: ours {memory['ours']:.0f} MiB, Keycloak {memory['keycloak']:.0f} MiB")
        restart = self.restarts(ours, env, our_chains["grpc"], PASSWORD)
        return self.report(hashes, hash_params, memory, restart, first_start)

    def kc_read_tokens(self, password: str) -> list[str]:
        """Keycloak access tokens for the read runs; renewed when older than 10 minutes (they live 900 s)."""
        if getattr(self, "_kc_read_at", 0.0) < time.monotonic() - 600:
            self._kc_read = [t["access_token"] for t in self.keycloak.logins(password, READ_SESSIONS)]
            self._kc_read_at = time.monotonic()
        return self._kc_read

    def kc_userinfo_targets(self) -> Path:
        from bench import PASSWORD

        vegeta = self.b.vegeta
        assert vegeta is not None
        return vegeta.targets(self.keycloak.userinfo_url, self.kc_read_tokens(PASSWORD))

    def _prime_chains(self, server: Any, kind: str, tokens: list[str], burst: float) -> float:
        mode, flavour = ("http", "keycloak") if kind == "keycloak" else (kind, "ours")
        if kind == "keycloak":
            target = self.keycloak.token_url
        else:
            target = server.target if kind == "grpc" else server.http_url + REFRESH
        result, latest = self.chains(server, mode, flavour, target, tokens, burst, 0)
        tokens[:] = latest
        return result.rps

    def restarts(self, ours: Server, env: dict[str, str], chains: list[str], password: str) -> dict[str, Any]:
        """Stop each, start it again on the same store, time until a token issued before answers a read."""
        import grpc
        import httpx

        from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc
        from bench import SERVER_CPU

        kc = self.keycloak
        kc_token = kc.logins(password, 1)[0]["access_token"]
        with grpc.insecure_channel(ours.target) as channel:  # a fresh access token: the setup's may have expired
            fresh = auth_pb2_grpc.AuthServiceStub(channel).Refresh(
                auth_pb2.RefreshRequest(refresh_token=next(t for t in chains if t)), timeout=10
            )
        our_token = fresh.access_token
        ours.stop()
        t0 = time.monotonic()
        again = self.b.server(env, "peer-restarted", cpus=SERVER_CPU)
        with grpc.insecure_channel(again.target) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            while True:
                try:
                    stub.GetMe(auth_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {our_token}")], timeout=5)
                    break
                except grpc.RpcError:
                    if time.monotonic() - t0 > 120:
                        raise
                    time.sleep(0.02)
        ours_s = time.monotonic() - t0
        again.stop()
        kc.stop()
        t0 = time.monotonic()
        kc.start(fresh=False)  # returns once the server answers; then the first authenticated read
        path = "token issued before the restart"
        while True:
            status = httpx.get(kc.userinfo_url, headers={"Authorization": f"Bearer {kc_token}"}, timeout=10).status_code
            if status == 200:
                break
            if status == 401:  # the session did not survive: log in again, as a client would
                kc_token = kc.logins(password, 1)[0]["access_token"]
                path = "the old token was refused (401): a new login, then userinfo"
                continue
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"Keycloak userinfo after restart: {status}")
            time.sleep(0.05)
        kc_s = time.monotonic() - t0
        log(f"restart -> first authenticated read: ours {ours_s:.2f}s, Keycloak {kc_s:.1f}s ({path})")
        return {"ours": round(ours_s, 2), "keycloak": round(kc_s, 2), "keycloak_path": path}

    def report(
        self,
        hashes: dict[str, list[float]],
        hash_params: dict[str, Any],
        memory: dict[str, float],
        restart: dict[str, Any],
        first_start: float,
    ) -> dict[str, Any]:
        import datetime
        import platform

        from bench import LOAD_CPU, SERVER_CPU, _cpu_model, _loadavg, _version

        b = self.b
        extra = hash_params.get("additionalParameters") or {}
        if hash_params["algorithm"] == "argon2":
            kind, memory_kib = (extra.get("type") or ["id"])[0], int((extra.get("memory") or ["0"])[0])
            kc_label = (
                f"argon2{kind}, {hash_params['hashIterations']} iterations, {memory_kib // 1024} MiB, "
                f"parallelism {(extra.get('parallelism') or ['1'])[0]}"
            )
        else:
            kc_label = f"{hash_params['algorithm']}, {hash_params['hashIterations']} iterations"
        results: dict[str, Any] = {
            "scenarios": {k: v.summary() for k, v in b.scenarios.items()},
            "hash": {
                "ours": {
                    "label": f"bcrypt cost {b.rounds}",
                    "rps": round(statistics.median(hashes["ours"]), 2),
                    "rounds": [round(h, 2) for h in hashes["ours"]],
                },
                "keycloak": {
                    "label": kc_label,
                    "rps": round(statistics.median(hashes["keycloak"]), 2),
                    "rounds": [round(h, 2) for h in hashes["keycloak"]],
                    "stored": hash_params,
                },
            },
            "memory_mib": memory,
            "restart_s": restart,
            "priming": self.priming,
        }
        per_round = []
        for i in range(self.p.rounds):
            one = {k: {"rps": v.runs[i].rps} for k, v in b.scenarios.items() if len(v.runs) > i}
            hashes_i = {side: {"rps": hashes[side][i]} for side in hashes}
            rs = ratios({"scenarios": one, "hash": hashes_i, "memory_mib": memory, "restart_s": restart})
            per_round.append({k: v for k, v in rs.items() if k not in ("memory_ratio", "restart_ratio")})
        results = {
            **ratios(results),
            "targets": {k: {"op": op, "value": v} for k, (op, v) in RATIOS.items()},
            "rounds_ratios": per_round,
            **results,
        }
        results["meta"] = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "profile": self.p.name,
            "rounds": self.p.rounds,
            "measure_s": self.p.measure,
            "keycloak": KC_VERSION,
            "keycloak_mode": "start-dev (dev mode, embedded H2 file store, fresh each run)",
            "keycloak_realm": self.keycloak.realm_settings,
            "keycloak_first_start_s": round(first_start, 1),
            "java": _java_version(self.keycloak.java),
            "store": "sqlite",
            "cores": b.cores,
            "cpu_model": _cpu_model(),
            "python": platform.python_version(),
            "grpcio": _version("grpcio"),
            "bcrypt_rounds": b.rounds,
            "pinning": f"both servers CPU {SERVER_CPU} (taskset), ghz, vegeta and the chain driver CPU {LOAD_CPU}",
            "concurrency": {"read": 50, "refresh_chains": CHAINS, "login": LOGIN_CONCURRENCY},
            "sessions": {"read": READ_SESSIONS, "chains": CHAINS},
            "seconds": round(time.monotonic() - b.started),
            "command": "scripts/bench " + " ".join(sys.argv[1:]),
            "loadavg_at_end": _loadavg(),
            "foreign_cpu_max": max((s["foreign_cpu_max"] for s in results["scenarios"].values()), default=0.0),
            **self.values,
        }
        return results


def _java_version(home: str) -> str:
    out = subprocess.run([f"{home}/bin/java", "-version"], capture_output=True, text=True).stderr
    return out.split('"')[1] if '"' in out else out.strip()[:40]


def run(args: argparse.Namespace, profile: Profile) -> int:
    """`scripts/bench --peer keycloak`: called by bench.main with its parsed arguments."""
    from bench import _bench, write_results

    if not (KC_HOME / "bin" / "kc.sh").exists():
        log(f"Keycloak {KC_VERSION} is not in {KC_HOME}: scripts/provision keycloak (scripts/bench does it)")
        return 2
    if not args.vegeta:
        log("vegeta not found: scripts/provision vegeta, or set $VEGETA")
        return 2
    java_home()
    with _bench(args, profile) as bench:
        peer = PeerBench(bench, profile, args)
        try:
            results = peer.run()
        finally:
            if getattr(peer, "keycloak", None) is not None:
                peer.keycloak.stop()
            if args.keep_logs:
                keep = REPO / "bench" / "logs"
                keep.mkdir(parents=True, exist_ok=True)
                (keep / "keycloak.log").write_bytes((bench.tmp / "keycloak.log").read_bytes())
    return write_results(results, args.output, render)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "chains":
        sys.path.insert(0, str(REPO))
        sys.exit(chains_main(sys.argv[2:]))
    sys.exit("run it as `scripts/bench --peer keycloak` (or `peer_keycloak.py chains ...`, the refresh-chain driver)")
