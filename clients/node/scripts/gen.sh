#!/usr/bin/env bash
# Generates the TypeScript code of protos/auth/v1 (plus google.rpc.Status and ErrorInfo, whose protos
# are vendored in proto/google/rpc from googleapis-common-protos) into src/gen with buf and ts-proto,
# both from this package's devDependencies. The generated files are committed;
# `scripts/gen.sh --check` fails when they differ from what the protos generate now.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=../..
out=src/gen
scripts/install.sh
export PATH="$PWD/node_modules/.bin:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One buf workspace: the contract, google/api (annotations the contract imports) and google/rpc.
mkdir -p "$tmp/in/protos" "$tmp/in/deps" "$tmp/out"
cp -r "$repo/protos/auth" "$tmp/in/protos/"
cp -r "$repo/third_party/googleapis/google" "$tmp/in/deps/"
cp -r proto/google "$tmp/in/deps/"
printf 'version: v2\nmodules:\n  - path: protos\n  - path: deps\n' > "$tmp/in/buf.yaml"
buf generate "$tmp/in" --template buf.gen.yaml -o "$tmp/out" \
  --path "$tmp/in/protos/auth/v1" \
  --path "$tmp/in/deps/google/rpc/status.proto" \
  --path "$tmp/in/deps/google/rpc/error_details.proto"
# The code imports none of these (ts-proto emits no options or extensions): leave them out.
rm -rf "$tmp/out/google/api" "$tmp/out/google/protobuf/descriptor.ts"

if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$tmp/out" "$out" >/dev/null; then
    echo "generated TypeScript code in clients/node/$out is stale: run clients/node/scripts/gen.sh and commit" >&2
    diff -r "$tmp/out" "$out" | head -20 >&2 || true
    exit 1
  fi
  echo "generated TypeScript code is up to date"
  exit 0
fi
rm -rf "$out"
cp -r "$tmp/out" "$out"
echo "generated into clients/node/$out"
