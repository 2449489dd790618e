"""Running the real `auth-server` process and the external tools (grpcurl) the e2e suites drive."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.mail import free_port

REPO = Path(__file__).resolve().parents[2]
AUTH_SERVER = Path(sys.executable).parent / "auth-server"


def tool(name: str) -> str:
    """Path of an external tool from PATH or .cache/bin; missing: fail under CI, else skip loudly."""
    found = shutil.which(name) or shutil.which(name, path=str(REPO / ".cache" / "bin"))
    if found:
        return found
    message = f"{name} is not installed: run scripts/provision {name} (scripts/test does)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


T = TypeVar("T")
GRPC_READY = "gRPC listening"
HTTP_READY = "HTTP bridge listening on "


class ServerProcess:
    """`auth-server serve` (gRPC + HTTP bridge, each on a free port) or another command, e.g. `bridge`.

    Ready when every readiness line of the command was printed: `serve` prints the gRPC line, then the
    bridge's; `bridge` only the bridge's. `http_url` is the bridge's base URL as the process printed it.
    """

    def __init__(self, env: dict[str, str], args: tuple[str, ...] = ("serve",)) -> None:
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.http_port = free_port()
        self.http_addr = f"127.0.0.1:{self.http_port}"
        self.http_url = f"http://{self.http_addr}"
        self.env = {**os.environ, "AUTH_GRPC_ADDR": self.addr, "AUTH_HTTP_ADDR": self.http_addr, **env}
        self.args = args
        self.output: list[str] = []
        self._waiting_for = {HTTP_READY} if args[:1] == ("bridge",) else {GRPC_READY, HTTP_READY}
        self._ready = threading.Event()
        self._output_changed = threading.Condition()
        self._ended = False
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [str(AUTH_SERVER), *self.args],
            env=self.env,
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise AssertionError("auth-server did not start:\n" + "".join(self.output))
        return self

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            with self._output_changed:
                self.output.append(line)
                self._output_changed.notify_all()
            for marker in list(self._waiting_for):
                if marker in line:
                    self._waiting_for.discard(marker)
                    if marker == HTTP_READY:
                        self.http_url = line.split(HTTP_READY, 1)[1].split()[0]
            if not self._waiting_for:
                self._ready.set()
        self._ready.set()  # the process ended: wake whoever waits
        with self._output_changed:
            self._ended = True
            self._output_changed.notify_all()

    def wait_for_output(self, find: Callable[[str], T | None], what: str, timeout: float = 15.0) -> T:
        """What `find` returns for the console output so far, once it returns something; waits for more
        output as the process prints it (e.g. a DEV MAIL), fails if the process ends or stays silent."""
        with self._output_changed:
            found = None

            def answer() -> bool:
                nonlocal found
                found = find("".join(self.output))
                return found is not None or self._ended

            self._output_changed.wait_for(answer, timeout)
            if found is None:
                raise AssertionError(f"auth-server never printed {what}; its console:\n" + "".join(self.output))
            return found

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@contextmanager
def running(env: dict[str, str]) -> Iterator[ServerProcess]:
    server = ServerProcess(env).start()
    try:
        yield server
    finally:
        server.stop()


def grpcurl(
    addr: str,
    method: str | None = None,
    data: dict | None = None,
    headers: dict[str, str] | None = None,
    verb: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """grpcurl against server reflection (no proto files), plaintext."""
    args = [tool("grpcurl"), "-plaintext", "-format-error"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    if data is not None:
        args += ["-d", json.dumps(data)]
    args.append(addr)
    if verb:
        args.append(verb)
    if method:
        args.append(method)
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
