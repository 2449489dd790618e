"""The README's walkthroughs, run as a newcomer runs them: every ```bash block of "Try it with grpcurl" and
"Try it with curl", in order, in one shell session, against a real `auth-server serve` started the way
`scripts/serve` starts it (console mail, generated dev secret).

Only these lines are changed before a block runs: `ADDR=...` and `B=...` point at this test's ports, and
`SIGNUP_CODE=123456`, `CODE=123456` and `RESET_CODE=123456` get the sign-up, sign-in and password-reset
codes the server printed in its DEV MAIL. Each block runs under `set -euo pipefail`, so any failing
command fails the test with the block and its output. What the README says the commands answer
(SESSION_REVOKED, the 401, the JSON in its comments) is asserted on their output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.process import REPO, ServerProcess, running, tool

pytestmark = pytest.mark.e2e
README = REPO / "README.md"
SECTIONS = ("Try it with grpcurl", "Try it with curl")
GRPC_ADDR_LINE = "ADDR=127.0.0.1:50051"
HTTP_BASE_LINE = "B=http://127.0.0.1:8080"
CODE_LINE = "CODE=123456"
SIGNUP_CODE_LINE = "SIGNUP_CODE=123456"
RESET_CODE_LINE = "RESET_CODE=123456"
DEV_MAIL = re.compile(r"----- DEV MAIL[^\n]*\n(.*?)\n----- END DEV MAIL -----", re.S)
# The line a block reads a code into, and the mail's sentence that carries it (the README quotes both).
CODE_IN_MAIL = {
    CODE_LINE: re.compile(r"Your sign-in code is ([0-9]{6})\b"),
    SIGNUP_CODE_LINE: re.compile(r"Your sign-up code is ([0-9]{6})\b"),
    RESET_CODE_LINE: re.compile(r"Your password reset code is ([0-9]{6})\b"),
}
# The variables a block leaves behind, for the next block (as one terminal would keep them): every
# variable the block's shell has beyond a fresh shell's, plus PATH, which the walkthrough extends.
SAVE_STATE = r"""
for __name in $(compgen -v); do
  case "$__name" in __*) continue ;; esac
  grep -qxF "$__name" <<<"$__fresh" || declare -p "$__name"
done > "$__state.next"
declare -p PATH >> "$__state.next"
mv "$__state.next" "$__state"
"""


@dataclass(frozen=True)
class Block:
    section: str
    text: str


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks: list[Block] = []
    for title in SECTIONS:
        head = f"\n## {title}\n"
        assert head in text, f"README.md has no section {title!r}"
        section = text.split(head, 1)[1].split("\n## ", 1)[0]
        found = re.findall(r"^```bash\n(.*?)^```", section, re.S | re.M)
        assert found, f"no ```bash block in README section {title!r}"
        blocks += [Block(title, body) for body in found]
    return blocks


def devmail_codes(console: str, code_line: str = CODE_LINE) -> list[str]:
    """The codes of one kind (the line the README reads them into) in the console's DEV MAILs, in order."""
    return [m.group(1) for mail in DEV_MAIL.findall(console) if (m := CODE_IN_MAIL[code_line].search(mail))]


@dataclass
class Shell:
    """One terminal's worth of state across blocks: each block is a fresh bash that starts from the
    variables the blocks before it left."""

    state: Path
    env: dict[str, str]

    def run(self, block: str) -> str:
        script = (
            'set -euo pipefail\n__fresh=$(compgen -v)\n__state="$1"\nsource "$__state"\n' + block + "\n" + SAVE_STATE
        )
        result = subprocess.run(
            ["bash", "-c", script, "readme-block", str(self.state)],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"README block failed (exit {result.returncode}):\n--- block ---\n{block}\n"
                f"--- output ---\n{result.stdout}",
                pytrace=False,
            )
        return result.stdout


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    # As scripts/serve runs it: no SMTP server (codes go to the console), a generated dev secret.
    env = {
        "AUTH_STORE": f"sqlite:///{tmp_path}/auth.db",
        "AUTH_SMTP_URL": "",
        "AUTH_JWT_SECRET": "",
        "AUTH_BCRYPT_ROUNDS": "4",  # speed only; the walkthrough does not depend on it
    }
    with running(env) as process:
        yield process


def _need(name: str) -> None:
    """jq is a system tool (or gojq from scripts/provision); grpcurl comes from scripts/provision."""
    if name != "jq":
        tool(name)
    elif not (shutil.which("jq") or shutil.which("jq", path=str(REPO / ".cache" / "bin"))):
        message = "jq is not installed: run scripts/provision jq (scripts/test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _claims_in_comments(block: str) -> list[str]:
    """JSON the README shows in a comment as a command's whole answer (`# {"message":"..."}`), compacted;
    comments with `...` in them are sketches, not claims."""
    claims = []
    for line in block.splitlines():
        comment = line.strip().removeprefix("# ")
        if line.strip().startswith("# {") and "..." not in comment:
            claims.append(json.dumps(json.loads(comment), separators=(",", ":")))
    return claims


def _json_answers(output: str) -> list[dict]:
    """The pretty-printed JSON objects (grpcurl's and jq's answers) in a block's output."""
    return [json.loads(found) for found in re.findall(r"^\{$.*?^\}$", output, re.S | re.M)]


def test_readme_walkthroughs_run_as_written(server: ServerProcess, tmp_path: Path) -> None:
    for name in ("grpcurl", "jq", "curl"):
        _need(name)
    blocks = readme_blocks()
    every_line = [line for block in blocks for line in block.text.splitlines()]
    for line in (GRPC_ADDR_LINE, HTTP_BASE_LINE, CODE_LINE, SIGNUP_CODE_LINE, RESET_CODE_LINE):
        assert line in every_line, f"README walkthrough has no line {line!r} for the test to point at its server"

    state = tmp_path / "shell-state"
    state.write_text("")
    shell = Shell(state, {**os.environ, "PATH": f"{REPO / '.cache' / 'bin'}:{os.environ['PATH']}"})
    outputs: dict[str, list[str]] = {title: [] for title in SECTIONS}
    ran: list[tuple[Block, str]] = []
    codes_used = dict.fromkeys(CODE_IN_MAIL, 0)
    previous = output = ""
    for block in blocks:
        lines = block.text.splitlines()
        for code_line in [line for line in lines if line in CODE_IN_MAIL]:
            codes_used[code_line] += 1
            n = codes_used[code_line]
            try:
                code = server.wait_for_output(
                    lambda console, n=n, k=code_line: (
                        codes[n - 1] if len(codes := devmail_codes(console, k)) >= n else None
                    ),
                    f"DEV MAIL #{n} with a code for {code_line}",
                )
            except AssertionError as missing:
                # The block before asked for the code: its output says why none came (curl -s hides errors).
                pytest.fail(
                    f"{missing}\n--- the block before ---\n{previous}\n--- its output ---\n{output}", pytrace=False
                )
            name = code_line.split("=", 1)[0]
            lines = [f"{name}={code}" if line == code_line else line for line in lines]
        lines = [
            f"ADDR={server.addr}"
            if line == GRPC_ADDR_LINE
            else f"B={server.http_url}"
            if line == HTTP_BASE_LINE
            else line
            for line in lines
        ]
        previous, output = "\n".join(lines), shell.run("\n".join(lines))
        for claim in _claims_in_comments(block.text):
            assert claim in output, f"README claims {claim} for this block:\n{block.text}\n--- output ---\n{output}"
        outputs[block.section].append(output)
        ran.append((block, output))

    grpc = "\n".join(outputs["Try it with grpcurl"])
    assert "auth.v1.AuthService" in grpc and '"status": "SERVING"' in grpc
    assert '"username": "jane"' in grpc and '"role": "ROLE_USER"' in grpc and '"email_verified": true' in grpc
    # The decoded JWT, as the README prints it: only session claims.
    (claims,) = [answer for answer in _json_answers(grpc) if "jti" in answer]
    assert set(claims) == {"session_id", "type", "iat", "exp", "jti"} and claims["type"] == "access"
    assert '"device_name": "My laptop"' in grpc and '"is_current": true' in grpc
    assert '"phone": "+14155550123"' in grpc  # UpdateMe stored the phone as E.164
    (revoked,) = [output for block, output in ran if "LogoutSession" in block.text]
    assert '"code": 16' in revoked and '"reason": "SESSION_REVOKED"' in revoked, revoked

    http = "\n".join(outputs["Try it with curl"])
    assert '"username":"joe"' in http and '"emailVerified":true' in http
    assert '"deviceName":"My laptop"' in http and '"isCurrent":true' in http
    assert "HTTP/1.1 401 Unauthorized" in http
    assert 'www-authenticate: bearer error="invalid_token"' in http.lower()
    assert '"reason":"session_revoked"' in http
