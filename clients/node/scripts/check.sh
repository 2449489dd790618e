#!/usr/bin/env bash
# What scripts/test runs for the Node client: installs the devDependencies from the npm registry
# (npm ci, skipped while node_modules was installed from this package-lock.json), checks that src/gen
# matches the protos, then type-checks (strict) and runs the unit tests (`npm test`, node:test, no
# network beyond an in-process server on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
scripts/gen.sh --check
npm test --silent
