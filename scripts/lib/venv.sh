# Sourced by scripts/*: makes sure .venv exists and holds this checkout's packages.
# Re-installs only when a pyproject.toml changed (the installs are editable, so code edits need nothing).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv="$repo/.venv"
py=${AUTH_PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv" >&2
  "$py" -m venv "$venv"
fi
stamp="$venv/.auth-installed"
want=$(cat "$repo/pyproject.toml" "$repo/clients/python/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing the service and its client package into .venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -e "$repo/clients/python" -e "$repo[test]" >&2
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
