"""The demo page (/demo) in headless Chromium, as a person uses it: sign up, log in, type a wrong code and
see the error in the code form itself, type the e-mailed code (read from a real SMTP server), see
"My devices" with this device marked, then a second browser revokes the first one's session and the
first shows "Your session was revoked from another device". Passwords and codes never stay in the forms
after sign-up, sign-in or sign-out. One screenshot per screen.

Chromium and ChromeDriver come from Debian (scripts/provision-browser). Missing: skipped loudly, except
under CI=true, where that is a failure. Screenshots go to the test's tmp dir and to .cache/artifacts/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.mail import SmtpSink
from tests.support.process import REPO, ServerProcess, running

pytestmark = pytest.mark.e2e
SECRET = "e2e-secret-e2e-secret-e2e-secret-e2e-secret"
PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = REPO / ".cache" / "artifacts"
REVOKED_TEXT = "Your session was revoked from another device"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1000,1000",
)


def _require_browser() -> Any:
    """The selenium webdriver module, once Chromium and its driver are known to be there."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("selenium (pip, the test extras)")
        webdriver = None
    if missing:
        # scripts/test says why it could not provide them here (no root, not Debian), else how to.
        why = os.environ.get("AUTH_BROWSER_NOT_RUN") or "run scripts/provision-browser"
        message = f"browser test needs {', '.join(missing)}: {why}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return webdriver


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def server(tmp_path: Path, smtp: SmtpSink) -> Iterator[ServerProcess]:
    env = {
        "AUTH_STORE": f"sqlite:///{tmp_path}/auth.db",
        "AUTH_JWT_SECRET": SECRET,
        "AUTH_SMTP_URL": smtp.url,
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_OTP_RESEND_INTERVAL": "0",  # two browsers log the same user in within seconds
    }
    with running(env) as process:
        yield process


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """One headless Chromium with its own fresh profile: a separate browser context (cookies included)."""
    webdriver = _require_browser()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for downloads
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = 20) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:  # the page re-renders lists: an element read mid-render is retried, not a failure
        return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        status = driver.execute_script("return document.getElementById('status')?.textContent")
        raise AssertionError(f"timed out waiting for {what}; page status: {status!r}") from None


def by_id(driver: Any, element_id: str) -> Any:
    return driver.find_element("id", element_id)


def open_demo(driver: Any, server: ServerProcess) -> None:
    driver.get(server.http_url + "/demo")
    wait(driver, lambda d: d.execute_script("return document.body.dataset.ready === 'true'"), "the page to load")


def fill(driver: Any, values: dict[str, str]) -> None:
    for element_id, value in values.items():
        field = by_id(driver, element_id)
        field.clear()
        field.send_keys(value)


def devices(driver: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": item.find_element("css selector", ".name").text,
            "current": bool(item.find_elements("css selector", ".badge")),
            "id": item.get_attribute("data-session-id"),
            "item": item,
        }
        for item in driver.find_elements("css selector", "#devices li")
    ]


def log_in(driver: Any, smtp: SmtpSink, username: str, email: str, device_name: str | None) -> None:
    mails = len(smtp.to(email))
    fill(driver, {"login-user": username, "login-password": PASSWORD})
    by_id(driver, "login-button").click()
    wait(driver, lambda d: by_id(d, "code-form").is_displayed(), "the code form")
    fill(driver, {"code": smtp.last_code(email, mails + 1), **({"device-name": device_name} if device_name else {})})
    by_id(driver, "code-button").click()
    wait(driver, lambda d: by_id(d, "signed-in").is_displayed() and devices(d), "My devices")


SECRET_FIELDS = ("signup-password", "signup-code", "login-password", "code")


def secrets_left(driver: Any) -> dict[str, str]:
    """The password and code fields that still hold something (should be none once used)."""
    return {field: value for field in SECRET_FIELDS if (value := by_id(driver, field).get_attribute("value"))}


def shown_in(driver: Any, inner: str, outer: str) -> bool:
    """`inner` is inside `outer` on the page, both displayed, and within the window without scrolling."""
    return bool(
        driver.execute_script(
            """
            const inner = document.getElementById(arguments[0]), outer = document.getElementById(arguments[1]);
            const a = inner.getBoundingClientRect(), b = outer.getBoundingClientRect();
            return outer.contains(inner) && a.height > 0 && a.top >= b.top && a.bottom <= b.bottom
                && a.top >= 0 && a.bottom <= window.innerHeight;
            """,
            inner,
            outer,
        )
    )


def screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    driver.save_screenshot(str(target))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(target, ARTIFACTS / name)
    return target


def test_devices_and_revocation_from_a_second_browser(server: ServerProcess, smtp: SmtpSink, tmp_path: Path) -> None:
    _require_browser()
    username, email = "ada", "ada@example.com"
    with chromium(tmp_path / "profile-a") as first, chromium(tmp_path / "profile-b") as second:
        # First browser: sign up, log in with the e-mailed code, naming the device.
        open_demo(first, server)
        assert by_id(first, "signed-out").is_displayed() and not by_id(first, "notice").is_displayed()
        screenshot(first, tmp_path, "signed-out.png")
        # Sign-up takes two steps: the form, then the code mailed to the address.
        fill(first, {"signup-username": username, "signup-email": email, "signup-password": PASSWORD})
        by_id(first, "signup-button").click()
        wait(first, lambda d: by_id(d, "signup-code-form").is_displayed(), "the sign-up code form")
        assert "a***@example.com" in by_id(first, "signup-code-hint").text
        assert secrets_left(first) == {}  # the new password does not stay on screen
        screenshot(first, tmp_path, "check-your-inbox.png")
        fill(first, {"signup-code": smtp.last_code(email)})
        by_id(first, "signup-code-button").click()
        wait(first, lambda d: "Account created" in by_id(d, "status").text, "the sign-up confirmation")
        assert not by_id(first, "signup-code-form").is_displayed()
        assert secrets_left(first) == {}  # nor does the code
        screenshot(first, tmp_path, "signed-up.png")

        # Log in, then a wrong code: the error appears in the code form, where the person is looking.
        mails = len(smtp.to(email))
        fill(first, {"login-user": username, "login-password": PASSWORD})
        by_id(first, "login-button").click()
        wait(first, lambda d: by_id(d, "code-form").is_displayed(), "the code form")
        assert secrets_left(first) == {}  # the password step is done: the password is gone
        code = smtp.last_code(email, mails + 1)
        fill(first, {"code": f"{(int(code) + 1) % 1_000_000:06d}", "device-name": "Browser A"})
        by_id(first, "code-button").click()
        wait(first, lambda d: by_id(d, "code-error").is_displayed(), "the wrong-code error")
        assert "code" in by_id(first, "code-error").text.lower()
        assert shown_in(first, "code-error", "code-form") and by_id(first, "status").text == ""
        assert not by_id(first, "login-error").is_displayed()
        screenshot(first, tmp_path, "wrong-code.png")
        fill(first, {"code": code})
        by_id(first, "code-button").click()
        wait(first, lambda d: by_id(d, "signed-in").is_displayed() and devices(d), "My devices")
        assert secrets_left(first) == {}
        assert [(d["name"], d["current"]) for d in devices(first)] == [("Browser A", True)]
        assert "Signed in as ada (ada@example.com)." == by_id(first, "whoami").text

        # The refresh token is an HttpOnly, Secure, SameSite=Strict cookie that the browser kept over
        # plain http on 127.0.0.1 (a secure context) and that scripts cannot read...
        # (WebDriver lists only the cookies of the page's own path; DevTools sees the API path's too.)
        stored = first.execute_cdp_cmd("Network.getCookies", {"urls": [server.http_url + "/api/v1/auth/refresh"]})
        (cookie,) = [c for c in stored["cookies"] if c["name"] == "refresh_token"]
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/api/v1/auth"
        assert "refresh_token" not in first.execute_script("return document.cookie")
        # ...and that signs the page in again after a reload (the access token lived only in memory).
        open_demo(first, server)
        wait(first, lambda d: by_id(d, "signed-in").is_displayed() and devices(d), "signed in again after reload")

        # Second browser (its own profile: a separate context): the same user logs in, device name from
        # the browser's User-Agent; both devices are listed, this one marked.
        open_demo(second, server)
        log_in(second, smtp, username, email, None)
        listed = devices(second)
        # Named by ua-parser from the agent: headless Chromium calls itself HeadlessChrome.
        assert sorted((d["name"], d["current"]) for d in listed) == [
            ("Browser A", False),
            ("HeadlessChrome on Linux", True),
        ]
        shot = screenshot(second, tmp_path, "devices.png")
        assert shot.stat().st_size > 10_000

        # Revoke the first browser's session from the second one.
        (target,) = [d for d in listed if d["name"] == "Browser A"]
        target["item"].find_element("css selector", "button.revoke").click()
        wait(second, lambda d: "Session revoked successfully" in by_id(d, "status").text, "the revoke confirmation")
        wait(second, lambda d: [x["name"] for x in devices(d)] == ["HeadlessChrome on Linux"], "the list without A")

        # The first browser's next call answers 401 session_revoked: the page says so.
        by_id(first, "refresh-devices").click()
        wait(first, lambda d: by_id(d, "notice").is_displayed(), "the revoked notice")
        assert by_id(first, "notice").text == REVOKED_TEXT
        assert not by_id(first, "signed-in").is_displayed() and by_id(first, "login-form").is_displayed()
        assert secrets_left(first) == {}  # signed out: the forms come back empty
        screenshot(first, tmp_path, "revoked.png")

        # The second browser is unaffected.
        by_id(second, "refresh-devices").click()
        wait(second, lambda d: by_id(d, "signed-in").is_displayed(), "the second browser still signed in")
        assert not by_id(second, "notice").is_displayed()


def test_forgot_password_in_the_demo(server: ServerProcess, smtp: SmtpSink, tmp_path: Path) -> None:
    """Forgot password? -> the identifier -> the mailed code and a new password -> log in with it."""
    import bcrypt

    from auth_server.infra.clock import utcnow
    from auth_server.infra.ids import new_id
    from auth_server.store import open_store
    from auth_server.store.base import User

    new_password = "purple elephant marmalade"
    store = open_store(f"sqlite:///{tmp_path}/auth.db")  # the account, made as the server would store it
    store.open()
    try:
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4))
        user = User(new_id(), "forgetter", "forgetter@example.com", "", "", "user", hashed, utcnow())
        store.create_user("default", user)
    finally:
        store.close()
    with chromium(tmp_path / "profile") as driver:
        open_demo(driver, server)
        by_id(driver, "forgot-open").click()
        wait(driver, lambda d: by_id(d, "forgot-form").is_displayed(), "the forgot-password form")
        fill(driver, {"forgot-user": "forgetter@example.com"})
        by_id(driver, "forgot-button").click()
        wait(driver, lambda d: by_id(d, "reset-form").is_displayed(), "the reset form")
        fill(driver, {"reset-code": smtp.last_code("forgetter@example.com", 1), "reset-password": new_password})
        screenshot(driver, tmp_path, "demo-reset.png")
        by_id(driver, "reset-button").click()
        wait(driver, lambda d: "password was reset" in by_id(d, "status").text, "the reset confirmation")
        assert not by_id(driver, "reset-form").is_displayed()
        assert by_id(driver, "reset-password").get_attribute("value") == ""
        smtp.wait_for("forgetter@example.com", 2)  # the "your password was reset" notice
        fill(driver, {"login-user": "forgetter", "login-password": new_password})
        by_id(driver, "login-button").click()
        wait(driver, lambda d: by_id(d, "code-form").is_displayed(), "the code form")
        fill(driver, {"code": smtp.last_code("forgetter@example.com", 3)})
        by_id(driver, "code-button").click()
        wait(driver, lambda d: by_id(d, "signed-in").is_displayed() and devices(d), "My devices")
