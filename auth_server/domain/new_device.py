"""The new-device sign-in notice: the rule "is this a device the user has used before", and the mail
with its one-click "This wasn't me" link (redeemed by Recovery.report_sign_in).

A sign-in is from a known device when its login presented a live device token of this user (Login
records that on the login challenge's payload), or when the user has a live session with the same
browser family from the same network (IPv4 /24, IPv6 /48: a home or office network, where an address
changes within the prefix). An account's very first sign-in is never "new": there is nothing to compare
with, and a notice would only teach users to ignore them. The first sign-in is marked by a counter
`seen:<user id>` created once (no expiry, so the purge leaves it).

The link's token is `<challenge id>.<secret>` written in letters only, so the mail holds no standalone
6-digit number (mail readers and our tests take one as a code). Only a keyed hash of it is stored, in a
`LoginChallenge(kind="signin_report")` whose payload names the session; it works once, for
AUTH_REPORT_TTL. A notice that cannot be sent never fails the sign-in: it is logged and dropped.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

from auth_server.domain import devices
from auth_server.domain.audit import Audit
from auth_server.domain.sessions import Device
from auth_server.infra.config import Settings
from auth_server.infra.ids import new_id
from auth_server.infra.keys import KeyRing
from auth_server.infra.mail import Mailer, MailError
from auth_server.store.base import Counter, DuplicateKey, LoginChallenge, Store, User

log = logging.getLogger(__name__)

KIND = "signin_report"
HASH_LABEL = "signin_report"
KNOWN_DEVICE = "known_device"  # the login challenge's payload field set when Login saw a device token
_SECRET_CHARS = 43  # letters only: 43 of 52 symbols is ~245 bits
_LETTERS = string.ascii_letters
# Hex digits 0-9 written as the letters g-p (which hex never uses), so ids in links carry no digits.
_TO_LETTERS = str.maketrans("0123456789", "ghijklmnop")
_FROM_LETTERS = str.maketrans("ghijklmnop", "0123456789")
_DIGIT_RUN = re.compile(r"[0-9]{5,}")


def login_payload(known_device: bool) -> str:
    """The payload Login stores on its challenge, so VerifyOtp knows whether a device token came with it."""
    return json.dumps({KNOWN_DEVICE: True}) if known_device else ""


def _payload(raw: str) -> dict[str, object]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def network_of(ip: str) -> str:
    """The network a sign-in came from: the IPv4 /24 or the IPv6 /48; the raw value when not an address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if isinstance(address, ipaddress.IPv4Address) else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def encode_token(challenge_id: str, secret: str) -> str:
    return f"{challenge_id.translate(_TO_LETTERS)}.{secret}"


def decode_token(token: str) -> tuple[str, str] | None:
    """(challenge id, the whole token) of a well-formed link token, else None."""
    encoded, _, secret = token.partition(".")
    if len(token) > 128 or len(encoded) != 32 or not secret or not token.isascii() or not secret.isalpha():
        return None
    challenge_id = encoded.translate(_FROM_LETTERS)
    if any(ch not in "0123456789abcdef" for ch in challenge_id):
        return None
    return challenge_id, token


def session_of(challenge: LoginChallenge) -> str:
    value = _payload(challenge.payload).get("session_id")
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class SignIn:
    """What the notice tells: the device, where from and when."""

    user: User
    session_id: str
    device: Device
    at: datetime


class NewDeviceNotices:
    def __init__(self, store: Store, settings: Settings, keys: KeyRing, mailer: Mailer, audit: Audit) -> None:
        self._store = store
        self._settings = settings
        self._keys = keys
        self._mailer = mailer
        self._audit = audit

    def is_known(self, tenant: str, user: User, login_payload: str, device: Device, now: datetime) -> bool:
        """Whether a sign-in of `user` on `device` is from a device the user has used before (see the module
        docstring). Call it before the new session opens, which would otherwise match itself."""
        if not self._settings.new_device_mail:
            return True  # no notice is sent, so nothing needs deciding (and no store reads)
        if _payload(login_payload).get(KNOWN_DEVICE) is True:
            return True
        family, network = devices.browser_family(device.user_agent), network_of(device.ip_address)
        if family:
            for session in self._store.list_active_sessions(tenant, user.id, now):
                if network_of(session.ip_address) == network and devices.browser_family(session.user_agent) == family:
                    return True
        return self._first_sign_in(tenant, user)

    def _first_sign_in(self, tenant: str, user: User) -> bool:
        """True exactly once per account: for its first sign-in (two at once: one of them)."""
        try:
            self._store.create_counter(tenant, Counter(id=f"seen:{user.id}", version=1))
        except DuplicateKey:
            return False
        return True

    def notify(self, tenant: str, sign_in: SignIn) -> None:
        """Mail the notice with its "This wasn't me" link. Never raises for mail trouble: a sign-in does
        not fail because its notice could not be sent."""
        user, now = sign_in.user, sign_in.at
        challenge_id = new_id()
        token = encode_token(challenge_id, "".join(secrets.choice(_LETTERS) for _ in range(_SECRET_CHARS)))
        self._store.create_challenge(
            tenant,
            LoginChallenge(
                id=challenge_id,
                user_id=user.id,
                otp_hash=self._keys.hash(HASH_LABEL, token),
                created_at=now,
                expires_at=now + timedelta(seconds=self._settings.report_ttl),
                kind=KIND,
                payload=json.dumps({"session_id": sign_in.session_id}),
            ),
        )
        # The name comes from the caller's user agent: keep long digit runs out, so no crafted agent can
        # put something that reads as a code into our mail.
        name = _DIGIT_RUN.sub("…", devices.describe(sign_in.device.user_agent))
        where = sign_in.device.ip_address or "an unknown address"
        when = now.strftime("%Y-%m-%d %H:%M UTC")
        link = f"{self._settings.public_url}/api/v1/auth/signin/report?token={token}"
        ttl = self._settings.report_ttl
        lasts = f"{ttl // 86400} days" if ttl >= 2 * 86400 else f"{max(1, ttl // 60)} minutes"
        try:
            self._mailer.send(
                user.email,
                f"New sign-in: {name} from {where}",
                f"New sign-in: {name} from {where} at {when}.\n\n"
                "If this was you, nothing is needed.\n"
                "If this wasn't you, open this link: it ends that sign-in and lets you set a new password "
                f"(it works once, for {lasts}):\n{link}\n",
            )
        except MailError:
            log.warning("new sign-in notice could not be mailed; the sign-in stands", exc_info=True)
            return
        self._audit.record(tenant, "signin.notice_sent", user_id=user.id, session_id=sign_in.session_id)
