# Sourced by scripts/*: makes sure .venv exists and holds this checkout's packages.
# Set the shell variable venv_extras before sourcing to add optional dependencies: scripts/test sets
# "test"; scripts/serve sets nothing and gets only what serving needs.
# Re-installs only when a pyproject.toml changed: one stamp file per extras set records the pyproject
# hash it was installed for (the installs are editable, so code edits need nothing). The test set
# includes everything serving needs, so scripts/serve after scripts/test installs nothing.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv="$repo/.venv"
py=${AUTH_PYTHON:-python3}
extras=${venv_extras:-}
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv" >&2
  "$py" -m venv "$venv"
fi
want=$(cat "$repo/pyproject.toml" "$repo/clients/python/pyproject.toml" | sha256sum | cut -d' ' -f1)
stamp="$venv/.auth-installed${extras:+-$extras}"
installed() { [ "$(cat "$1" 2>/dev/null)" = "$want" ]; }
if ! installed "$stamp" && ! { [ -z "$extras" ] && installed "$venv/.auth-installed-test"; }; then
  if [ -n "$extras" ]; then
    echo "==> installing auth-server, its client package and the [$extras] extras into .venv" >&2
  else
    echo "==> installing auth-server and its client package into .venv" >&2
  fi
  echo "    (one to two minutes the first time, more on a slow network; skipped next time until a pyproject.toml changes)" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  # Quiet pip, and silence setuptools' "Editable installation" banner (a reminder that ./auth_server
  # shadows the installed package: here that is the point of an editable install).
  PYTHONWARNINGS="ignore:Editable installation:UserWarning" "$venv/bin/python" -m pip install -q \
    --disable-pip-version-check -e "$repo/clients/python" -e "$repo${extras:+[$extras]}" >&2
  echo "$want" > "$stamp"
  echo "==> installed" >&2
fi
export PATH="$venv/bin:$PATH"
