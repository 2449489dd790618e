"""Sending e-mail: an SMTP sender (plain, STARTTLS, implicit TLS, optional login) and a console sender.

Senders are blocking and run on the calling handler thread (the gRPC server is a thread pool), with a
timeout so a dead SMTP server costs one call its deadline, never the server. A failed send raises
MailError; the caller turns it into UNAVAILABLE and leaves nothing usable behind.
"""

from __future__ import annotations

import smtplib
import ssl
import sys
import threading
from email.message import EmailMessage
from typing import Protocol, TextIO
from urllib.parse import unquote, urlsplit


class MailError(Exception):
    """The message could not be handed to the mail server."""


class Mailer(Protocol):
    def send(self, to: str, subject: str, body: str) -> None: ...


class SmtpMailer:
    def __init__(self, url: str, sender: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self._scheme = parts.scheme
        self._host = parts.hostname or "localhost"
        self._port = parts.port or {"smtps": 465, "smtp+starttls": 587}.get(parts.scheme, 25)
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._sender = sender
        self._timeout = timeout

    def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            if self._scheme == "smtps":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self._host, self._port, timeout=self._timeout, context=ssl.create_default_context()
                )
            else:
                client = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
            with client:
                if self._scheme == "smtp+starttls":
                    client.starttls(context=ssl.create_default_context())
                if self._user:
                    client.login(self._user, self._password or "")
                client.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"SMTP delivery to {self._host}:{self._port} failed: {type(exc).__name__}") from exc


class ConsoleMailer:
    """Development only: prints mails (codes included) to stderr, clearly marked."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stderr
        self._lock = threading.Lock()

    def send(self, to: str, subject: str, body: str) -> None:
        with self._lock:
            print(
                f"----- DEV MAIL (console sender; set AUTH_SMTP_URL for real delivery) -----\n"
                f"To: {to}\nSubject: {subject}\n\n{body}\n"
                f"----- END DEV MAIL -----",
                file=self._out,
                flush=True,
            )
