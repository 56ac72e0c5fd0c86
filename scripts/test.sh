#!/usr/bin/env bash
# Runs the whole test suite, first setting up what it needs on a fresh
# machine: a Python venv with the real OpenTelemetry SDK and OTLP exporters,
# the AWS X-Ray SDK for Python and boto3
# (tests/python/requirements.txt) that the end-to-end tests drive, moto's
# S3 server, Garage (built once from crates.io) and Debian's prometheus
# package (the scrape test runs a real Prometheus), the web UI's npm
# packages and Debian's chromium (the browser test drives it), and the AWS
# X-Ray SDK for Node.js (tests/node/package-lock.json).
#
#   CARGO_TARGET_DIR  build dir, default /var/tmp/tracelake-target (kept between runs)
#   TRACELAKE_VENV    venv dir, default /var/tmp/tracelake-venv
#   TRACELAKE_TOOLS   where garage is built, default /var/tmp/tracelake-tools
#   extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tracelake-target}"
venv="${TRACELAKE_VENV:-/var/tmp/tracelake-venv}"
requirements=tests/python/requirements.txt

if ! cmp -s "$requirements" "$venv/.tracelake-requirements" 2>/dev/null \
   || ! "$venv/bin/python" -c 'import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.grpc.trace_exporter, opentelemetry.exporter.otlp.proto.http.trace_exporter, aws_xray_sdk.core, boto3, moto.server' 2>/dev/null; then
  echo "setting up python clients in $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/.tracelake-requirements"
fi
export TRACELAKE_TEST_PYTHON="$venv/bin/python"
export TRACELAKE_TEST_MOTO="$venv/bin/moto_server"

# Garage, the S3-compatible store of the multi-node tests: built once (about
# 12 minutes) into a directory outside the clone and reused.
tools="${TRACELAKE_TOOLS:-/var/tmp/tracelake-tools}"
garage_version=2.5.0
if ! "$tools/bin/garage" --version 2>/dev/null | grep -q "$garage_version"; then
  echo "building garage $garage_version into $tools (once)"
  CARGO_TARGET_DIR="$tools/target" cargo install garage --version "$garage_version" --locked --root "$tools" --quiet
  rm -rf "$tools/target"
fi
export TRACELAKE_TEST_GARAGE="$tools/bin/garage"

# Debian packages the tests drive, installed once.
apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "installing Debian's $1 package"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$1" >/dev/null \
    || { $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$1" >/dev/null; }
}
command -v prometheus >/dev/null 2>&1 || apt_install prometheus
export TRACELAKE_TEST_PROMETHEUS="$(command -v prometheus)"

# The web UI: its npm packages (Vite, playwright-core), a check that the
# committed ui/dist is what ui/src builds to, and Chromium for the browser
# test.
./scripts/build-ui.sh --check
[ -x /usr/bin/chromium ] || apt_install chromium
export TRACELAKE_TEST_CHROMIUM=/usr/bin/chromium

# The AWS X-Ray SDK for Node.js the sampling test runs (tests/node): npm ci
# only when the lockfile changed since the last install.
if ! cmp -s tests/node/package-lock.json tests/node/node_modules/.tracelake-lock 2>/dev/null; then
  echo "installing the Node.js X-Ray SDK (npm ci in tests/node)"
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
  cp tests/node/package-lock.json tests/node/node_modules/.tracelake-lock
fi
export TRACELAKE_TEST_NODE="$(command -v node)"

# Benches run once each in test mode (they must keep working), then every
# unit, integration and end-to-end test; the last line totals them.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --benches --locked "$@"
cargo test --workspace --lib --bins --tests --locked "$@" 2>&1 | tee "$log"
# The optional Ballista feature: its own build (DataFusion with default features).
cargo test --locked --features ballista --test e2e "$@" -- ballista 2>&1 | tee -a "$log"
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
