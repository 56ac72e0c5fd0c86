#!/usr/bin/env bash
# tracelake's system benchmark: one machine, one run, release build.
#
#   ./scripts/bench.sh [--spans N] [--lookup-spans M] [--storage-spans S]
#       N: spans per ingest phase (default 2,000,000)
#       M: spans stored for the trace-by-id phase (default 10,000,000; 0 skips it)
#       S: spans per workload shape in the storage-by-shape phase (default 1,000,000; 0 skips it)
#
# Phases (each against a fresh `tracelake serve` on port 0 with its own data dir):
#   1. ingest over OTLP gRPC: `tracelake loadgen` sends the reference workload as
#      fast as accepted; spans per second per core = spans acknowledged / (user+sys
#      CPU seconds of the server process during the phase, its flushes to Parquet
#      included: the server flushes every 2 s);
#   2. ingest over X-Ray UDP: the same at a fixed rate; spans stored (counted with
#      SQL) / server CPU seconds, and the share lost;
#   3. storage: after the server's final flush (compaction off), Parquet bytes per span,
#      the ratio to the OTLP protobuf bytes of the same spans, and the ratio to a naive
#      flat Parquet file of the same rows written by DuckDB (zstd, binary ids, attributes
#      as JSON); then the server is restarted on the same data with compaction on, and
#      the same figures are taken once compaction has merged everything it will;
#   4. trace by id without a time range (Tempo's /api/traces/{id}) with M spans stored
#      (compaction on, as a server runs): p50/p99 over 1,000 random existing ids and
#      1,000 absent ids, one at a time;
#   5. overload: two loaders (OTLP gRPC and OTLP HTTP, replaying re-keyed requests
#      with `loadgen --pool`) offer for 30 s many times what a server with
#      memory.limit_bytes = 1 GiB stores; offered/stored, peak RSS against the limit,
#      and whether every acknowledged span was stored;
#   6. storage by workload shape: `scripts/bench-storage.sh` (the api,
#      serverless and mesh shapes, S spans each): bytes per span after flush
#      and after compaction, and the ratio to a naive zstd Parquet file;
#   peak RSS (VmHWM) of the server in each phase.
# Writes bench-results/results.md and bench-results/results.json; README.md quotes them.
# The query benchmarks (service map, TraceQL, p99 by service vs DuckDB) are
# `cargo bench --bench service_map` and `cargo bench --bench traceql`.
set -euo pipefail
cd "$(dirname "$0")/.."

SPANS=2000000
LOOKUP_SPANS=10000000
STORAGE_SPANS=1000000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --spans) SPANS="$2"; shift 2 ;;
    --lookup-spans) LOOKUP_SPANS="$2"; shift 2 ;;
    --storage-spans) STORAGE_SPANS="$2"; shift 2 ;;
    *) echo "usage: $0 [--spans N] [--lookup-spans M] [--storage-spans S]" >&2; exit 2 ;;
  esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tracelake-target}"
cargo build --release --bin tracelake
BIN="$CARGO_TARGET_DIR/release/tracelake"

WORK="$(mktemp -d /var/tmp/tracelake-bench.XXXXXX)"
source scripts/bench-lib.sh

stored_spans() {
  curl -s --data 'SELECT count(*) AS n FROM spans' "http://$HTTP/v1/sql" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])'
}

# 1. OTLP gRPC ingest (compaction off: phase 3 measures blocks as flushed, then compacted).
start_server "$WORK/grpc" --compaction-interval 0s
cpu0=$(cpu_seconds "$SERVER_PID")
# --retry: requests refused while flushes catch up are resent, as exporters
# do, so every generated span is stored and the storage ratios compare the same spans.
"$BIN" loadgen --protocol otlp-grpc --endpoint "$GRPC" --spans "$SPANS" --connections 8 --batch 1000 --retry --json \
  | tail -1 > "$WORK/grpc.json"
sleep 5  # the last flush
cpu1=$(cpu_seconds "$SERVER_PID")
grpc_rss=$(peak_rss_kb "$SERVER_PID")
stop_server
flushed_bytes=$(parquet_bytes "$WORK/grpc")
flushed_blocks=$(find "$WORK/grpc/tenants" -name '*.parquet' -path '*/spans/*' | wc -l)
cp -r "$WORK/grpc/tenants" "$WORK/flushed"

# 3b. The same data, compacted by a server that starts on it.
start_server "$WORK/grpc" --compaction-interval 1s --compaction-delete-delay 0s
ccpu0=$(cpu_seconds "$SERVER_PID")
wait_compacted 5
ccpu1=$(cpu_seconds "$SERVER_PID")
compact_rss=$(peak_rss_kb "$SERVER_PID")
stop_server
compacted_blocks=$(find "$WORK/grpc/tenants" -name '*.parquet' -path '*/spans/*' | wc -l)
echo "{\"flushed_bytes\": $flushed_bytes, \"flushed_blocks\": $flushed_blocks, \"compacted_blocks\": $compacted_blocks, \"compaction_cpu_s\": $(awk -v a="$ccpu0" -v b="$ccpu1" 'BEGIN {printf "%.3f", b - a}'), \"compaction_peak_rss_kb\": $compact_rss}" > "$WORK/compaction.json"

# 2. X-Ray UDP ingest at a fixed rate (UDP has no backpressure: faster only drops).
UDP_SPANS=$(( SPANS / 4 ))
start_server "$WORK/udp"
ucpu0=$(cpu_seconds "$SERVER_PID")
"$BIN" loadgen --protocol xray-udp --endpoint "$UDP" --spans "$UDP_SPANS" --rate 40000 --connections 2 --json \
  | tail -1 > "$WORK/udp.json"
sleep 5  # the last datagrams, and the last flush
ucpu1=$(cpu_seconds "$SERVER_PID")
udp_stored=$(stored_spans)
udp_rss=$(peak_rss_kb "$SERVER_PID")
stop_server

# 4. Trace by id without a time range.
echo '{}' > "$WORK/lookup.json"
if [[ "$LOOKUP_SPANS" -gt 0 ]]; then
  start_server "$WORK/lookup" --compaction-interval 10s --compaction-delete-delay 0s
  # --retry: refused requests (the server sheds load past flush.max_head_bytes)
  # are resent, so all M spans are stored.
  "$BIN" loadgen --protocol otlp-grpc --endpoint "$GRPC" --spans "$LOOKUP_SPANS" --connections 8 --batch 1000 \
    --retry --json | tail -1 > /dev/null
  sleep 5  # the last flush
  wait_compacted 25
  lookup_blocks=$(metric tracelake_storage_blocks)
  "$PY" - "$HTTP" "$WORK/lookup.json" <<'LOOKUP'
import json, random, sys, time, urllib.request, urllib.error
http, out = sys.argv[1], sys.argv[2]
query = "SELECT DISTINCT encode(trace_id, 'hex') AS id FROM spans ORDER BY id LIMIT 10000"
rows = json.load(urllib.request.urlopen(urllib.request.Request(f"http://{http}/v1/sql", data=query.encode())))["rows"]
random.seed(1)
present = random.sample([row["id"] for row in rows], min(1000, len(rows)))
absent = ["%032x" % random.getrandbits(128) for _ in range(1000)]
def timings(ids, expect):
    out = []
    for trace_id in ids:
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"http://{http}/api/traces/{trace_id}") as response:
                response.read(); status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        out.append((time.perf_counter() - started) * 1000)
        assert status == expect, (trace_id, status)
    out.sort()
    return {"p50_ms": out[len(out) // 2], "p99_ms": out[int(len(out) * 0.99) - 1], "count": len(out)}
json.dump({"present": timings(present, 200), "absent": timings(absent, 404)}, open(out, "w"))
LOOKUP
  lookup_rss=$(peak_rss_kb "$SERVER_PID")
  echo "{\"peak_rss_kb\": $lookup_rss, \"blocks\": $lookup_blocks}" > "$WORK/lookup-rss.json"
  stop_server
fi

# 5. Overload.
OVERLOAD_LIMIT=1073741824
start_server "$WORK/overload" --memory-limit-bytes "$OVERLOAD_LIMIT" \
  --flush-max-head-bytes 268435456 --flush-max-bytes 134217728
OTLP_HTTP=$(address otlp-http)
"$BIN" loadgen --protocol otlp-grpc --endpoint "$GRPC" --duration 30s --connections 2 --batch 2000 \
  --pool 1 --json 2>/dev/null | tail -1 > "$WORK/overload-grpc.json" &
GRPC_LOADER=$!
"$BIN" loadgen --protocol otlp-http --endpoint "$OTLP_HTTP" --duration 30s --connections 200 --batch 2000 \
  --pool 1 --json 2>/dev/null | tail -1 > "$WORK/overload-http.json"
wait "$GRPC_LOADER"
echo "{\"limit\": $OVERLOAD_LIMIT, \"peak_rss_kb\": $(peak_rss_kb "$SERVER_PID"), \"stored\": $(stored_spans)}" \
  > "$WORK/overload.json"
stop_server

# 3. Storage: the OTLP gRPC phase's blocks after the final flush.
"$PY" - "$WORK" "$cpu0" "$cpu1" "$grpc_rss" "$ucpu0" "$ucpu1" "$udp_stored" "$udp_rss" "$OUT" "$LOOKUP_SPANS" <<'EOF'
import glob, json, os, sys
import duckdb

work, cpu0, cpu1, grpc_rss, ucpu0, ucpu1, udp_stored, udp_rss, out, lookup_spans = sys.argv[1:]
lookup = json.load(open(f"{work}/lookup.json"))
try:
    lookup_server = json.load(open(f"{work}/lookup-rss.json"))
    lookup_rss, lookup_blocks = lookup_server["peak_rss_kb"] / 1024, lookup_server["blocks"]
except OSError:
    lookup_rss = lookup_blocks = None
compaction = json.load(open(f"{work}/compaction.json"))
grpc = json.load(open(f"{work}/grpc.json"))
udp = json.load(open(f"{work}/udp.json"))
files = glob.glob(f"{work}/grpc/tenants/*/spans/*/*/*.parquet")
parquet_bytes = sum(os.path.getsize(f) for f in files)
flushed_bytes = compaction["flushed_bytes"]
spans = grpc["acked_spans"]
naive = f"{work}/naive.parquet"
con = duckdb.connect()
con.execute(f"""
COPY (SELECT trace_id, span_id, parent_span_id, name, kind, service_name, start_time, end_time,
             status_code, status_message, to_json(attributes) AS attributes,
             to_json(resource_attributes) AS resource_attributes
      FROM read_parquet({files!r}))
TO '{naive}' (FORMAT parquet, COMPRESSION zstd)""")
naive_bytes = os.path.getsize(naive)
results = {
    "spans": spans,
    "ingest_otlp_grpc": {
        "spans_per_s_per_core": spans / max(float(cpu1) - float(cpu0), 1e-9),
        "spans_per_s_wall": grpc["rate_spans_per_s"],
        "server_cpu_s": float(cpu1) - float(cpu0),
        "ack_latency_ms": grpc["ack_latency_ms"],
        "peak_rss_mb": int(grpc_rss) / 1024,
    },
    "ingest_xray_udp": {
        "sent": udp["sent_spans"],
        "stored": int(udp_stored),
        "lost_share": 1 - int(udp_stored) / max(udp["sent_spans"], 1),
        "spans_per_s_per_core": int(udp_stored) / max(float(ucpu1) - float(ucpu0), 1e-9),
        "peak_rss_mb": int(udp_rss) / 1024,
    },
    "storage": {
        "flushed_blocks": compaction["flushed_blocks"],
        "bytes_per_span_after_flush": flushed_bytes / spans,
        "compacted_blocks": compaction["compacted_blocks"],
        "bytes_per_span": parquet_bytes / spans,
        "compaction_cpu_s": compaction["compaction_cpu_s"],
        "compaction_peak_rss_mb": compaction["compaction_peak_rss_kb"] / 1024,
        "otlp_protobuf_bytes_per_span": grpc["otlp_protobuf_bytes"] / spans,
        "ratio_to_otlp_after_flush": flushed_bytes / grpc["otlp_protobuf_bytes"],
        "ratio_to_otlp": parquet_bytes / grpc["otlp_protobuf_bytes"],
        "naive_parquet_bytes_per_span": naive_bytes / spans,
        "ratio_to_naive_parquet_after_flush": flushed_bytes / naive_bytes,
        "ratio_to_naive_parquet": parquet_bytes / naive_bytes,
    },
}
overload = json.load(open(f"{work}/overload.json"))
loaders = [json.load(open(f"{work}/overload-{name}.json")) for name in ("grpc", "http")]
offered = sum(loader["sent_spans"] for loader in loaders)
acked = sum(loader["acked_spans"] for loader in loaders)
results["overload"] = {
    "offered_spans": offered,
    "acked_spans": acked,
    "stored_spans": overload["stored"],
    "offered_per_stored": offered / max(acked, 1),
    "complete": overload["stored"] == acked,
    "memory_limit_mb": overload["limit"] / 2**20,
    "peak_rss_mb": overload["peak_rss_kb"] / 1024,
    "peak_rss_per_limit": overload["peak_rss_kb"] * 1024 / overload["limit"],
}
if lookup:
    results["trace_by_id"] = {"spans_stored": int(lookup_spans), "blocks": lookup_blocks, **lookup, "peak_rss_mb": lookup_rss}
json.dump(results, open(f"{out}/results.json", "w"), indent=2)
g, u, s = results["ingest_otlp_grpc"], results["ingest_xray_udp"], results["storage"]
o = results["overload"]
md = f"""| measure ({spans:,} spans, reference workload) | figure |
|---|---|
| OTLP gRPC ingest, spans/s per core of the server (wall rate) | {g['spans_per_s_per_core']:,.0f} ({g['spans_per_s_wall']:,.0f}/s) |
| OTLP gRPC ack latency p50 / p99 | {g['ack_latency_ms']['p50']:.1f} / {g['ack_latency_ms']['p99']:.1f} ms |
| X-Ray UDP ingest at 40k spans/s, spans/s per core; lost | {u['spans_per_s_per_core']:,.0f}; {u['lost_share']:.2%} |
| Parquet bytes per span after flush, {s['flushed_blocks']} blocks (OTLP protobuf: {s['otlp_protobuf_bytes_per_span']:.0f}) | {s['bytes_per_span_after_flush']:.1f} (ratio {s['ratio_to_otlp_after_flush']:.3f}) |
| after compaction, {s['compacted_blocks']} blocks ({s['compaction_cpu_s']:.1f} s CPU, peak RSS {s['compaction_peak_rss_mb']:.0f} MB) | {s['bytes_per_span']:.1f} (ratio {s['ratio_to_otlp']:.3f}) |
| vs a naive flat Parquet file of the same rows (DuckDB, zstd): after flush / after compaction | {s['naive_parquet_bytes_per_span']:.1f} bytes/span (ratio {s['ratio_to_naive_parquet_after_flush']:.2f} / {s['ratio_to_naive_parquet']:.2f}) |
| peak RSS: OTLP gRPC phase / UDP phase | {g['peak_rss_mb']:.0f} / {u['peak_rss_mb']:.0f} MB |
| overload, 30 s: offered / stored spans (OTLP gRPC + HTTP); every acked span stored | {o['offered_spans']:,} / {o['stored_spans']:,} ({o['offered_per_stored']:.1f}x); {'yes' if o['complete'] else 'NO'} |
| overload: peak RSS / memory.limit_bytes | {o['peak_rss_mb']:.0f} / {o['memory_limit_mb']:.0f} MB ({o['peak_rss_per_limit']:.2f}) |
"""
if lookup:
    md += (f"| trace by id, no time range, {int(lookup_spans):,} spans stored in {lookup_blocks} blocks: present p50 / p99 | "
           f"{lookup['present']['p50_ms']:.1f} / {lookup['present']['p99_ms']:.1f} ms |\n"
           f"| the same for absent ids: p50 / p99 | {lookup['absent']['p50_ms']:.1f} / {lookup['absent']['p99_ms']:.1f} ms |\n")
open(f"{out}/results.md", "w").write(md)
print(md)
EOF

# 6. Storage by workload shape.
if [[ "$STORAGE_SPANS" -gt 0 ]]; then
  ./scripts/bench-storage.sh --bin "$BIN" --spans "$STORAGE_SPANS"
  { echo; cat "$OUT/storage.md"; } >> "$OUT/results.md"
fi
