# Shared by scripts/bench.sh and scripts/bench-storage.sh (sourced, not run):
# the DuckDB venv, the results directory, and a `tracelake serve` on port 0
# with its helpers. Expects BIN (the tracelake binary) and WORK (a scratch
# directory, removed on exit with the server stopped).

OUT=bench-results
mkdir -p "$OUT"
trap '[[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

VENV="${TRACELAKE_BENCH_VENV:-/var/tmp/tracelake-bench-venv}"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import duckdb" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet duckdb
fi
PY="$VENV/bin/python"
CLK=$(getconf CLK_TCK)
SERVER_PID=""

# Starts a server on data dir $1 (further arguments go to `serve`); sets
# SERVER_PID and the GRPC, UDP and HTTP addresses. The head is flushed every
# 2 s, so CPU measured covers the whole path to Parquet, not just the WAL.
start_server() {
  local data="$1"; shift
  "$BIN" serve --data-dir "$data" --flush-max-age 2s "$@" \
    --listen-xray-udp 127.0.0.1:0 --listen-xray-api 127.0.0.1:0 \
    --listen-otlp-grpc 127.0.0.1:0 --listen-otlp-http 127.0.0.1:0 --listen-http 127.0.0.1:0 \
    > "$WORK/listening" 2> "$WORK/server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    [[ $(grep -c '^listening' "$WORK/listening" 2>/dev/null || true) -ge 5 ]] && break
    sleep 0.1
  done
  address() { awk -v name="$1" '$1 == "listening" && $2 == name {print $3}' "$WORK/listening"; }
  GRPC=$(address otlp-grpc); UDP=$(address xray-udp); HTTP=$(address http)
}
stop_server() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=""; }
cpu_seconds() { awk -v clk="$CLK" '{printf "%.3f", ($14 + $15) / clk}' "/proc/$1/stat"; }
peak_rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
metric() { curl -s "http://$HTTP/metrics" | awk -v name="$1" '$1 == name {print $2}'; }
# Waits until compaction has merged all it will: no block merged for $1 s
# (longer than the compaction interval).
wait_compacted() {
  local last=-1 now stable=0
  while [[ $stable -lt $1 ]]; do
    now=$(metric tracelake_storage_compacted_blocks_total)
    if [[ "$now" == "$last" ]]; then stable=$((stable + 1)); else stable=0; last="$now"; fi
    sleep 1
  done
}
parquet_bytes() { find "$1/tenants" -name '*.parquet' -path '*/spans/*' -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
