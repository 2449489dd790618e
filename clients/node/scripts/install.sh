#!/usr/bin/env bash
# `npm ci` in the given folder (default: this package) unless its node_modules was installed from its
# current package-lock.json: a stamp in node_modules records the lockfile's hash.
# tests/e2e/test_node_client.py keeps the same stamp.
set -euo pipefail
dir=${1:-"$(dirname "$0")/.."}
cd "$dir"
stamp=node_modules/.installed-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
npm ci --no-audit --no-fund >&2
echo "$want" > "$stamp"
