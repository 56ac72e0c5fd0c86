#!/usr/bin/env bash
# The multi-node benchmark: tracelake on a real S3-compatible store (Garage,
# single node on loopback), release build.
#
#   ./scripts/bench-s3.sh [--spans N] [--lookups K]
#
# Phases:
#   1. ingest: `tracelake loadgen` (OTLP gRPC, as fast as accepted) sends N spans to
#      `serve` on the file backend, then to a `--role collector` writing to Garage
#      (flush every 10 s); spans per CPU second of the server, and the ratio;
#   2. trace by id through a `--role query` on the same bucket: K ids taken with SQL,
#      looked up one at a time (/api/traces/{id}) cold (empty block cache) and again
#      warm; p50 and p99 of each pass.
# Needs garage (scripts/test.sh builds it into /var/tmp/tracelake-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

SPANS=1000000
LOOKUPS=300
while [[ $# -gt 0 ]]; do
  case "$1" in
    --spans) SPANS="$2"; shift 2 ;;
    --lookups) LOOKUPS="$2"; shift 2 ;;
    *) echo "usage: $0 [--spans N] [--lookups K]" >&2; exit 2 ;;
  esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tracelake-target}"
cargo build --release --bin tracelake
BIN="$CARGO_TARGET_DIR/release/tracelake"
GARAGE="${TRACELAKE_TEST_GARAGE:-/var/tmp/tracelake-tools/bin/garage}"
CLK=$(getconf CLK_TCK)

WORK="$(mktemp -d /var/tmp/tracelake-bench-s3.XXXXXX)"
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Garage: one node, one bucket, one key.
S3_PORT=$(free_port); RPC_PORT=$(free_port); ADMIN_PORT=$(free_port)
cat > "$WORK/garage.toml" <<EOF
metadata_dir = "$WORK/garage/meta"
data_dir = "$WORK/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
EOF
g() { "$GARAGE" -c "$WORK/garage.toml" "$@"; }
g server > "$WORK/garage.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do g status > /dev/null 2>&1 && break; sleep 0.2; done
NODE=$(g node id -q | cut -d@ -f1)
g layout assign -z dc1 -c 1G "$NODE" > /dev/null
g layout apply --version 1 > /dev/null
g bucket create tracelake-bench > /dev/null
KEY_OUT=$(g key create bench)
KEY_ID=$(echo "$KEY_OUT" | awk -F': *' '/Key ID/ {print $2}')
echo "$KEY_OUT" | awk -F': *' '/Secret key/ {print $2}' > "$WORK/secret"
g bucket allow --read --write --owner tracelake-bench --key bench > /dev/null

S3_CONFIG="storage = \"s3://tracelake-bench/bench\"
[s3]
endpoint = \"http://127.0.0.1:$S3_PORT\"
region = \"garage\"
access_key_id = \"$KEY_ID\"
secret_access_key_file = \"$WORK/secret\""

# start NAME ROLE EXTRA_TOML: starts a server, sets PID and the listener addresses.
start() {
  local name=$1 role=$2 extra=$3
  mkdir -p "$WORK/$name"
  printf 'role = "%s"\n%s\n%s\n' "$role" "$([[ $role == all ]] && echo 'storage = "file"' || echo "$S3_CONFIG")" "$extra" \
    > "$WORK/$name.toml"
  "$BIN" serve --config "$WORK/$name.toml" --data-dir "$WORK/$name/data" \
    --listen-xray-udp 127.0.0.1:0 --listen-xray-api 127.0.0.1:0 --listen-otlp-grpc 127.0.0.1:0 \
    --listen-otlp-http 127.0.0.1:0 --listen-http 127.0.0.1:0 > "$WORK/$name.out" 2> "$WORK/$name.err" &
  PID=$!
  PIDS+=($PID)
  for _ in $(seq 300); do grep -q "listening http" "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
  GRPC=$(awk '/listening otlp-grpc/ {print $3}' "$WORK/$name.out")
  HTTP=$(awk '/listening http/ {print $3}' "$WORK/$name.out")
}
cpu_seconds() { awk -v clk="$CLK" '{print ($14 + $15) / clk}' "/proc/$1/stat"; }

ingest() {
  local name=$1 role=$2
  start "$name" "$role" $'[flush]\nmax_age = "10s"'
  local before after rate
  before=$(cpu_seconds "$PID")
  "$BIN" loadgen --protocol otlp-grpc --endpoint "$GRPC" --spans "$SPANS" --retry --json \
    > "$WORK/$name.loadgen" 2> /dev/null
  after=$(cpu_seconds "$PID")
  rate=$(python3 -c "import json,sys; r=json.loads(open('$WORK/$name.loadgen').read().strip().splitlines()[-1]); print(round(r['acked_spans']/($after-$before)))")
  kill -INT "$PID"; wait "$PID" || true
  echo "$rate"
}

echo "ingest: $SPANS spans over OTLP gRPC"
FILE_RATE=$(ingest file all)
S3_RATE=$(ingest collector collector)
echo "  file backend:          $FILE_RATE spans per server CPU second"
echo "  collector on Garage:   $S3_RATE spans per server CPU second"
python3 -c "print('  ratio S3/file:         %.2f' % ($S3_RATE / $FILE_RATE))"

echo "trace by id through a querier on Garage ($LOOKUPS ids)"
start query query $'[cluster]\nrefresh_interval = "1s"'
IDS=$(curl -s --data "SELECT DISTINCT encode(trace_id, 'hex') AS id FROM spans LIMIT $LOOKUPS" "http://$HTTP/v1/sql" \
  | python3 -c 'import json,sys; print("\n".join(row["id"] for row in json.load(sys.stdin)["rows"]))')
pass() {
  for id in $IDS; do
    curl -s -o /dev/null -w '%{time_total}\n' "http://$HTTP/api/traces/$id"
  done | sort -n | awk '{a[NR]=$1} END {printf "p50 %.1f ms, p99 %.1f ms\n", a[int(NR*0.5)+1]*1000, a[int(NR*0.99)+1]*1000}'
}
echo "  cold (block cache empty): $(pass)"
echo "  warm:                     $(pass)"
