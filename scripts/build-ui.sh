#!/usr/bin/env bash
# Builds the web UI (ui/) with the npm packages ui/package-lock.json pins
# into ui/dist, the files the query crate embeds in the binary. Commit
# ui/dist with the sources: a plain `cargo build` then needs no Node.js.
#
#   scripts/build-ui.sh          install the packages if needed, build into ui/dist
#   scripts/build-ui.sh --check  build into a temporary dir and fail if ui/dist differs
set -euo pipefail
cd "$(dirname "$0")/../ui"

# npm ci only when the lockfile changed since the last install.
if ! cmp -s package-lock.json node_modules/.tracelake-lock 2>/dev/null; then
  echo "installing the UI's npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.tracelake-lock
fi

if [ "${1:-}" = "--check" ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
  npx vite build --logLevel error --outDir "$out" --emptyOutDir
  if ! diff -r "$out" dist >/dev/null; then
    echo "ui/dist is stale: run scripts/build-ui.sh and commit ui/dist" >&2
    diff -r "$out" dist | head -20 >&2 || true
    exit 1
  fi
  echo "ui/dist matches ui/src"
else
  npx vite build --logLevel warn
fi
