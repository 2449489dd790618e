"""A real SMTP server (aiosmtpd) that keeps what it receives, for tests that read codes from mail."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller

OTP_IN_MAIL = re.compile(r"(?<![0-9])([0-9]{6})(?![0-9])")
UNLOCK_IN_MAIL = re.compile(r"token=([A-Za-z0-9._-]+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


class SmtpSink:
    def __init__(self) -> None:
        self.mails: list[Mail] = []
        # When `hold` is set up (hold_deliveries), each delivery signals `arrived` and then waits for
        # `hold` to be set: a test can keep a Login call provably in flight.
        self.hold: threading.Event | None = None
        self.arrived = threading.Semaphore(0)
        self._changed = threading.Condition()
        self._controller = Controller(self, hostname="127.0.0.1", port=free_port())

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self._controller.port}"

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.hold is not None:
            self.arrived.release()
            await asyncio.get_running_loop().run_in_executor(None, self.hold.wait, 60)
        message = message_from_bytes(envelope.content, policy=policy.default)
        body = message.get_body(("plain",))
        mail = Mail(to=envelope.rcpt_tos[0], subject=str(message["subject"]), body=body.get_content() if body else "")
        with self._changed:
            self.mails.append(mail)
            self._changed.notify_all()
        return "250 OK"

    def wait_for(self, to: str, count: int = 1, timeout: float = 10.0) -> Mail:
        """The count-th mail to `to` (1-based), waiting for it to arrive."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.to(to)) >= count, timeout)
            assert arrived, f"no mail #{count} to {to} within {timeout}s; got {self.mails}"
            return self.to(to)[count - 1]

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.mails if m.to == address]

    def last_code(self, to: str, count: int = 1) -> str:
        mail = self.wait_for(to, count)
        codes = OTP_IN_MAIL.findall(mail.body)
        assert len(codes) == 1, f"expected exactly one 6-digit number in {mail.body!r}"
        return codes[0]
