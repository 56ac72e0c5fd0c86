#!/usr/bin/env bash
# Web UI timings against a release `tracelake demo` (ports of its own on
# loopback, a temporary data dir), run for WARMUP so the map has minutes
# of traffic, then ui/tests/browser.mjs RUNS times in headless Chromium:
# page load to service map drawn, search to results, result to waterfall.
# Prints every run's timings and their medians. Needs what scripts/test.sh
# installs (Node.js, the UI's npm packages, Debian's chromium).
#
#   WARMUP (default 7m, a `sleep` duration), RUNS (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tracelake-target}"
warmup="${WARMUP:-7m}"
runs="${RUNS:-5}"

cargo build --release --locked --quiet --bin tracelake
./scripts/build-ui.sh >/dev/null

dir="$(mktemp -d)"
"$CARGO_TARGET_DIR/release/tracelake" demo --duration 2h --data-dir "$dir/data" \
  --listen-xray-udp 127.0.0.1:0 --listen-xray-api 127.0.0.1:0 \
  --listen-otlp-grpc 127.0.0.1:0 --listen-otlp-http 127.0.0.1:0 \
  --listen-http 127.0.0.1:0 >"$dir/demo.log" 2>&1 &
demo=$!
trap 'kill $demo 2>/dev/null; wait $demo 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  grep -q '^listening http ' "$dir/demo.log" && break
  sleep 0.2
done
base="http://$(awk '/^listening http / { print $3; exit }' "$dir/demo.log")"
echo "demo at $base; warming up for $warmup"
sleep "$warmup"

json() { python3 -c "import json, sys; print(eval(sys.argv[1], {'d': json.load(sys.stdin)}))" "$1"; }
for run in $(seq "$runs"); do
  trace=$(curl -sG "$base/api/search" --data-urlencode 'q={ resource.service.name = "orders-api/prod" } >> { resource.service.name = "fulfil-order" }' --data-urlencode limit=1 | json "d['traces'][0]['traceID']")
  start=$(curl -s "$base/v1/traces/$trace" | json "int(d['start_unix_nano']) / 1e9")
  fault=$(curl -sG "$base/v1/search" --data-urlencode 'q=service("charge-payment") { fault }' --data-urlencode limit=1 | json "d['traces'][0]['trace_id']")
  input=$(python3 -c "import json, sys; print(json.dumps({'url': sys.argv[1], 'nodes': [['create-order', 'AWS::Lambda::Function']], 'edges': [['orders-api/prod', 'create-order']], 'trace_id': sys.argv[2], 'trace_start': float(sys.argv[3]), 'fault_trace_id': sys.argv[4], 'search_service': 'fulfil-order', 'artifacts': sys.argv[5]}))" "$base" "$trace" "$start" "$fault" "$dir/shots")
  (cd ui && TRACELAKE_UI_TEST="$input" node tests/browser.mjs) | grep '^timing' | sed "s/^/run $run: /"
done | tee "$dir/timings"
echo "medians:"
sed 's/^run [0-9]*: timing - //' "$dir/timings" | python3 -c "
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in sys.stdin:
    what, ms = line.rsplit(': ', 1)
    runs[what].append(int(ms.split()[0]))
for what, values in runs.items():
    print(f'  {what}: {statistics.median(values):.0f} ms ({len(values)} runs)')
"
