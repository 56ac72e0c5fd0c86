#!/usr/bin/env bash
# Bytes on disk per span, by workload shape, against a naive Parquet file.
#
#   ./scripts/bench-storage.sh [--spans N] [--shapes "api serverless mesh"] [--bin PATH]
#       N: spans per shape (default 1,000,000)
#
# For each shape (the workload crate's `Shape`s; none of them the reference
# workload): a fresh `tracelake serve` with compaction off takes N spans over
# OTLP gRPC (`tracelake loadgen --shape`), flushes them at shutdown, and the
# span blocks' bytes are counted; then a server started on the same data
# compacts them and they are counted again. The naive file holds the same
# spans, every column an SRE would keep, written by DuckDB with zstd:
# binary ids, times as timestamps, the attribute maps, events and links as
# JSON text, in the order the blocks hold them (so it gets tracelake's sort
# order for free: a harder baseline than arrival order).
#
# Writes bench-results/storage.md and bench-results/storage.json; bytes do
# not depend on the build profile, so `--bin` may name a debug build.
set -euo pipefail
cd "$(dirname "$0")/.."

SPANS=1000000
SHAPES="api serverless mesh"
BIN=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --spans) SPANS="$2"; shift 2 ;;
    --shapes) SHAPES="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    *) echo "usage: $0 [--spans N] [--shapes \"api serverless mesh\"] [--bin PATH]" >&2; exit 2 ;;
  esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tracelake-target}"
if [[ -z "$BIN" ]]; then
  cargo build --release --bin tracelake
  BIN="$CARGO_TARGET_DIR/release/tracelake"
fi

WORK="$(mktemp -d /var/tmp/tracelake-bench-storage.XXXXXX)"
source scripts/bench-lib.sh


for shape in $SHAPES; do
  data="$WORK/$shape"
  start_server "$data" --compaction-interval 0s
  "$BIN" loadgen --protocol otlp-grpc --endpoint "$GRPC" --shape "$shape" --spans "$SPANS" \
    --connections 4 --batch 1000 --retry --json | tail -1 > "$WORK/$shape.loadgen.json"
  stop_server
  flushed=$(parquet_bytes "$data")
  start_server "$data" --compaction-interval 1s --compaction-delete-delay 0s
  wait_compacted 5
  stop_server
  compacted=$(parquet_bytes "$data")
  echo "{\"flushed_bytes\": $flushed, \"compacted_bytes\": $compacted}" > "$WORK/$shape.bytes.json"
done

"$PY" - "$WORK" "$OUT" "$SHAPES" <<'EOF'
import glob, json, os, sys
import duckdb

work, out, shapes = sys.argv[1], sys.argv[2], sys.argv[3].split()
results = {}
for shape in shapes:
    loadgen = json.load(open(f"{work}/{shape}.loadgen.json"))
    sizes = json.load(open(f"{work}/{shape}.bytes.json"))
    files = sorted(glob.glob(f"{work}/{shape}/tenants/*/spans/*/*/*.parquet"))
    naive = f"{work}/{shape}.naive.parquet"
    con = duckdb.connect()
    spans = con.execute(f"SELECT count(*) FROM read_parquet({files!r})").fetchone()[0]
    con.execute(f"""
    COPY (SELECT trace_id, span_id, parent_span_id, trace_state, name, kind, service_name,
                 start_time, end_time, status_code, status_message, flags,
                 to_json(attributes) AS attributes, to_json(resource_attributes) AS resource_attributes,
                 scope_name, scope_version, to_json(events) AS events, to_json(links) AS links
          FROM read_parquet({files!r}))
    TO '{naive}' (FORMAT parquet, COMPRESSION zstd)""")
    naive_bytes = os.path.getsize(naive)
    results[shape] = {
        "spans": spans,
        "acked_spans": loadgen["acked_spans"],
        "otlp_bytes_per_span": loadgen["otlp_protobuf_bytes"] / loadgen["acked_spans"],
        "bytes_per_span_after_flush": sizes["flushed_bytes"] / spans,
        "bytes_per_span": sizes["compacted_bytes"] / spans,
        "naive_bytes_per_span": naive_bytes / spans,
        "ratio_to_naive_after_flush": sizes["flushed_bytes"] / naive_bytes,
        "ratio_to_naive": sizes["compacted_bytes"] / naive_bytes,
    }
json.dump(results, open(f"{out}/storage.json", "w"), indent=2)
lines = [
    "| shape | spans | OTLP bytes/span | tracelake bytes/span (flushed / compacted) | naive Parquet bytes/span | ratio to naive (flushed / compacted) |",
    "|---|---|---|---|---|---|",
]
for shape, r in results.items():
    lines.append(
        f"| {shape} | {r['spans']:,} | {r['otlp_bytes_per_span']:.0f} | "
        f"{r['bytes_per_span_after_flush']:.1f} / {r['bytes_per_span']:.1f} | "
        f"{r['naive_bytes_per_span']:.1f} | "
        f"{r['ratio_to_naive_after_flush']:.2f} / {r['ratio_to_naive']:.2f} |"
    )
open(f"{out}/storage.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
