#!/usr/bin/env bash
# Writes a small data dir with a tracelake binary, and that binary's
# answers to a fixed list of requests over it, for the test that a data dir
# written by an older release opens and answers identically
# (tests/e2e/datadir_compat.rs).
#
#   scripts/write-datadir-fixture.sh BINARY OUT_DIR
#
# OUT_DIR/data      blocks (flushed at shutdown) and a WAL with spans that
#                   never reached a block (the process was killed)
# OUT_DIR/requests  one request per line: name, a tab, the path and query
# OUT_DIR/answers/  the binary's answer to each request, NAME.json
set -euo pipefail

binary=$(realpath "$1")
out=$2
work=$(mktemp -d)
trap 'kill "${server:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

# Starts the binary on data dir $1; sets $server and $http, $otlp, $udp.
start() {
  "$binary" serve --data-dir "$1" --retention-period 0s --flush-max-age 1h \
    --listen-xray-udp 127.0.0.1:0 --listen-xray-api 127.0.0.1:0 \
    --listen-otlp-grpc 127.0.0.1:0 --listen-otlp-http 127.0.0.1:0 \
    --listen-http 127.0.0.1:0 >"$work/out" 2>"$work/err" &
  server=$!
  http=
  for _ in $(seq 150); do
    http=$(awk '$1 == "listening" && $2 == "http" {print $3}' "$work/out")
    [ -n "$http" ] && curl -sf "http://$http/ready" >/dev/null && break
    sleep 0.2
  done
  otlp=$(awk '$1 == "listening" && $2 == "otlp-http" {print $3}' "$work/out")
  udp=$(awk '$1 == "listening" && $2 == "xray-udp" {print $3}' "$work/out")
}

spans() {
  curl -sf -G "http://$http/v1/sql" --data-urlencode 'q=SELECT count(*) AS n FROM spans' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])'
}

# Waits until the count of spans holds still for a second; prints it.
settle() {
  local before=-1 now
  for _ in $(seq 60); do
    now=$(spans)
    [ "$now" = "$before" ] && { echo "$now"; return; }
    before=$now
    sleep 1
  done
  echo "the count of spans never settled" >&2
  exit 1
}

# Waits until the server holds $1 spans.
wait_for() {
  for _ in $(seq 200); do
    [ "$(spans 2>/dev/null || echo 0)" -ge "$1" ] && return
    sleep 0.2
  done
  echo "the server holds $(spans) spans, not $1" >&2
  exit 1
}

mkdir -p "$out/answers"
data="$work/data"
start_s=$(date +%s)

# Blocks: spans over OTLP HTTP and X-Ray UDP, flushed at shutdown.
start "$data"
"$binary" loadgen --protocol otlp-http --endpoint "$otlp" --spans 400 --seed 7 \
  --connections 1 --batch 100 >/dev/null
"$binary" loadgen --protocol xray-udp --endpoint "$udp" --spans 100 --seed 8 \
  --connections 1 --batch 20 >/dev/null
blocks=$(settle)
kill -TERM "$server"
wait "$server" || true

# The WAL: more spans, then the process dies before a flush.
start "$data"
"$binary" loadgen --protocol otlp-http --endpoint "$otlp" --spans 100 --seed 9 \
  --connections 1 --batch 50 >/dev/null
total=$(settle)
kill -KILL "$server"
wait "$server" 2>/dev/null || true
end_s=$(( $(date +%s) + 60 ))

rm -rf "$out/data"
cp -a "$data" "$out/data"

# The answers, over a copy (opening replays the WAL and flushes at shutdown).
cp -a "$data" "$work/read"
start "$work/read"
wait_for "$total"
ids=$(curl -sf "http://$http/api/search?limit=3&start=$start_s&end=$end_s" |
  python3 -c 'import json,sys; print(" ".join(t["traceID"] for t in json.load(sys.stdin)["traces"]))')
{
  printf 'sql_by_service\t/v1/sql?q=%s\n' \
    "$(python3 -c 'import urllib.parse; print(urllib.parse.quote("SELECT service_name, kind, count(*) AS spans, sum(duration_ns) AS total_ns FROM spans GROUP BY service_name, kind ORDER BY service_name, kind"))')"
  printf 'tempo_search\t/api/search?limit=20&start=%s&end=%s&q=%s\n' "$start_s" "$end_s" \
    "$(python3 -c 'import urllib.parse; print(urllib.parse.quote("{ status = error || duration > 50ms }"))')"
  printf 'tempo_tag_values\t/api/v2/search/tag/resource.service.name/values?start=%s&end=%s\n' "$start_s" "$end_s"
  printf 'traceql_rate\t/api/metrics/query_range?start=%s&end=%s&step=60s&q=%s\n' "$start_s" "$end_s" \
    "$(python3 -c 'import urllib.parse; print(urllib.parse.quote("{ } | count_over_time() by (resource.service.name)"))')"
  printf 'jaeger_services\t/jaeger/api/services\n'
  printf 'service_map\t/v1/service-map?start=%s&end=%s\n' "$start_s" "$end_s"
  n=0
  for id in $ids; do
    n=$((n + 1))
    printf 'tempo_trace_%s\t/api/traces/%s\n' "$n" "$id"
  done
} >"$out/requests"
while IFS=$'\t' read -r name path; do
  curl -sf "http://$http$path" >"$out/answers/$name.json"
done <"$out/requests"
kill -TERM "$server"
wait "$server" || true
echo "wrote $out: $total spans ($blocks in blocks), $(wc -l <"$out/requests") requests"
