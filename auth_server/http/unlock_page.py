"""The unlock link's confirmation page, and the form post its button sends (issue 11, row 12).

The lockout mail links to `GET /api/v1/auth/unlock?token=...`. Mail scanners, link previews and
security gateways fetch the links in a mail before its reader does, so that GET must not redeem the
single-use token: it answers a small HTML page whose one button POSTs the token, form-encoded, to
`POST /api/v1/auth/unlock`, the route of UnlockAccount. (Scanners follow links; they do not submit forms.)

Form bodies are accepted on that route only (FORM_RPCS). A cross-site HTML form can send one without a
CORS preflight: on any other route that would be a forgery (a sign-up or login in the visitor's
browser), which is why the bridge otherwise takes JSON only; here it can only redeem a token the sender
already holds. A form post is a top-level browser navigation, so its answer is a readable HTML page
(JSON would be shown raw, and a bad token would read as a crash); a JSON post to the same route keeps
the JSON answer of every route.

Both pages carry the token at most in an HTML-escaped hidden field, never as text; no script runs
(`default-src 'none'`), the form may post only to this origin, framing is refused, nothing is cached
(the token is in the page and its URL) and no Referer leaves it (the URL holds the token).
"""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qsl

from starlette.responses import HTMLResponse

from auth_server.http.errors import HttpError, bad_request

PAGE_PATH = "/api/v1/auth/unlock"
FORM_RPCS = frozenset({"auth.v1.AuthService.UnlockAccount"})
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


def confirmation_page(query_string: bytes) -> HTMLResponse:
    """The page the e-mailed link opens: the token in a form, redeemed only when its button is pressed."""
    try:
        pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        pairs = []
    tokens = [value for name, value in pairs if name == "token"]  # other parameters (trackers') are ignored
    if len(tokens) != 1 or not tokens[0] or len(tokens[0]) > MAX_TOKEN_CHARS:
        return _page(
            "This unlock link is incomplete",
            "<p>Open the whole link from the e-mail, or copy it into the address bar in one piece.</p>\n",
            400,
        )
    # action="unlock" is relative to /api/v1/auth/unlock, so it also works behind a path prefix.
    form = (
        "<p>Sign-in to your account was blocked after repeated failed attempts. If they were yours, unlock "
        "it now; if not, leave this page (the block ends by itself) and consider changing your password.</p>\n"
        '<form method="post" action="unlock">\n'
        f'<input type="hidden" name="token" value="{escape(tokens[0], quote=True)}">\n'
        '<button type="submit">Unlock my account</button>\n</form>\n'
    )
    return _page("Unlock your account", form, 200)


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


def result_page(error: HttpError | None) -> HTMLResponse:
    """What the browser shows after the form post: done, or why not (the service's message for callers)."""
    if error is None:
        return _page("Your account is unlocked", "<p>You can sign in again.</p>\n", 200)
    return _page(
        "Your account was not unlocked",
        f"<p>{escape(error.message)}</p>\n<p>Open the link of the latest unlock e-mail, or wait until the lock "
        "ends by itself.</p>\n",
        error.http_status,
    )
