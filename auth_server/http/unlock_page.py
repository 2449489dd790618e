"""The pages of the mailed one-click links, and the form posts their buttons send (issue 11, row 12;
issue 14): the unlock link of the lockout mail, and the "This wasn't me" link of a new-device notice.

The lockout mail links to `GET /api/v1/auth/unlock?token=...`, the notice to
`GET /api/v1/auth/signin/report?token=...` (LINKS). Mail scanners, link previews and security gateways
fetch the links in a mail before its reader does, so that GET must not redeem the single-use token: it
answers a small HTML page whose one button POSTs the token, form-encoded, to the same path, the route
of UnlockAccount or ReportSignIn. (Scanners follow links; they do not submit forms.) The report's answer
page carries the next step, a form that posts the mailed reset code and a new password to
`POST /api/v1/auth/password/reset` (ResetPassword), so the whole "This wasn't me" path works with no
script.

Form bodies are accepted on those routes only (FORM_RPCS). A cross-site HTML form can send one without
a CORS preflight: on any other route that would be a forgery (a sign-up or login in the visitor's
browser), which is why the bridge otherwise takes JSON only; here it can only redeem a token (or a reset
code) the sender already holds. A form post is a top-level browser navigation, so its answer is a
readable HTML page (JSON would be shown raw, and a bad token would read as a crash); a JSON post to the
same route keeps the JSON answer of every route.

Both pages carry the token at most in an HTML-escaped hidden field, never as text; no script runs
(`default-src 'none'`), the form may post only to this origin, framing is refused, nothing is cached
(the token is in the page and its URL) and no Referer leaves it (the URL holds the token).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import HTMLResponse

from auth_server.http.errors import HttpError, bad_request

UNLOCK_RPC = "auth.v1.AuthService.UnlockAccount"
REPORT_RPC = "auth.v1.AuthService.ReportSignIn"
RESET_RPC = "auth.v1.AuthService.ResetPassword"
PAGE_PATH = "/api/v1/auth/unlock"
REPORT_PATH = "/api/v1/auth/signin/report"
FORM_RPCS = frozenset({UNLOCK_RPC, REPORT_RPC, RESET_RPC})
FORM_MEDIA = "application/x-www-form-urlencoded"
MAX_TOKEN_CHARS = 1024  # unlock tokens are ~70; anything far longer is not from our mail
MAX_FORM_FIELDS = 8
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
}


@dataclass(frozen=True)
class LinkPage:
    """What the page of one mailed link says, and where its button posts (relative to the link's path,
    so it also works behind a path prefix)."""

    action: str
    title: str
    explanation: str  # HTML
    button: str
    incomplete: str  # the title when the link arrived cut


LINKS = {
    PAGE_PATH: LinkPage(
        action="unlock",
        title="Unlock your account",
        explanation="<p>Sign-in to your account was blocked after repeated failed attempts. If they were yours, "
        "unlock it now; if not, leave this page (the block ends by itself) and consider changing your password.</p>\n",
        button="Unlock my account",
        incomplete="This unlock link is incomplete",
    ),
    REPORT_PATH: LinkPage(
        action="report",
        title="Was this sign-in not you?",
        explanation="<p>If you did not sign in from the device named in the e-mail, end that sign-in now. We "
        "then e-mail you a code to set a new password. If it was you, leave this page.</p>\n",
        button="It wasn't me: end that sign-in",
        incomplete="This link is incomplete",
    ),
}


def is_form(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == FORM_MEDIA


def _page(title: str, body: str, status: int) -> HTMLResponse:
    html = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{escape(title)}</title>\n</head>\n<body>\n<main>\n<h1>{escape(title)}</h1>\n{body}</main>\n"
        "</body>\n</html>\n"
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def confirmation_page(query_string: bytes, path: str = PAGE_PATH) -> HTMLResponse:
    """The page the e-mailed link at `path` (a key of LINKS) opens: the token in a form, redeemed only
    when its button is pressed."""
    link = LINKS[path]
    try:
        pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        pairs = []
    tokens = [value for name, value in pairs if name == "token"]  # other parameters (trackers') are ignored
    if len(tokens) != 1 or not tokens[0] or len(tokens[0]) > MAX_TOKEN_CHARS:
        return _page(
            link.incomplete,
            "<p>Open the whole link from the e-mail, or copy it into the address bar in one piece.</p>\n",
            400,
        )
    form = (
        f"{link.explanation}"
        f'<form method="post" action="{link.action}">\n'
        f'<input type="hidden" name="token" value="{escape(tokens[0], quote=True)}">\n'
        f'<button type="submit">{escape(link.button)}</button>\n</form>\n'
    )
    return _page(link.title, form, 200)


def parse_form(raw: bytes) -> dict[str, str]:
    """The fields of an application/x-www-form-urlencoded body; 400 for bad encoding or a repeated field."""
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):  # bad UTF-8, bad percent-escape, too many fields
        raise bad_request("invalid_field", "The form body is not valid UTF-8 form encoding.") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise bad_request("invalid_field", f"Form field {name!r} given twice.")
        fields[name] = value
    return fields


def _reset_form(reset_id: str) -> str:
    """The next step of a reported sign-in: the mailed code and a new password (ResetPassword)."""
    return (
        '<form method="post" action="../password/reset">\n'
        f'<input type="hidden" name="reset_id" value="{escape(reset_id, quote=True)}">\n'
        '<p><label>Code from the e-mail <input name="code" inputmode="numeric" autocomplete="one-time-code" '
        'maxlength="6" required></label></p>\n'
        '<p><label>New password <input name="new_password" type="password" autocomplete="new-password" '
        "required></label></p>\n"
        '<button type="submit">Set my new password</button>\n</form>\n'
    )


def result_page(
    error: HttpError | None, rpc: str = UNLOCK_RPC, fields: dict[str, str] | None = None, reply: Any = None
) -> HTMLResponse:
    """What the browser shows after the form post of `rpc`: done, or why not (the service's message for
    callers). `fields` is the posted form, `reply` the RPC's answer."""
    if rpc == REPORT_RPC:
        if error is None:
            return _page(
                "That sign-in was ended",
                "<p>We e-mailed you a code. Enter it with a new password: every device is then signed out.</p>\n"
                + _reset_form(str(getattr(reply, "reset_id", ""))),
                200,
            )
        return _page(
            "This link did not work",
            f"<p>{escape(error.message)}</p>\n<p>If someone else is using your account, use \u201cForgot "
            "password\u201d on the sign-in page to set a new password.</p>\n",
            error.http_status,
        )
    if rpc == RESET_RPC:
        if error is None:
            return _page("Your password was reset", "<p>Every device was signed out. Sign in with it.</p>\n", 200)
        # The form again, so a mistyped code or a refused password can be retried on the same reset.
        retry = _reset_form(fields.get("reset_id", "")) if fields and fields.get("reset_id") else ""
        return _page("Your password was not reset", f"<p>{escape(error.message)}</p>\n{retry}", error.http_status)
    if error is None:
        return _page("Your account is unlocked", "<p>You can sign in again.</p>\n", 200)
    return _page(
        "Your account was not unlocked",
        f"<p>{escape(error.message)}</p>\n<p>Open the link of the latest unlock e-mail, or wait until the lock "
        "ends by itself.</p>\n",
        error.http_status,
    )
