"""DuckDB over the Parquet blocks a bench wrote: the side-by-side figures
for tracelake's own queries over the same files.

usage: duckdb_queries.py QUERY PARQUET_GLOB START_NS END_NS RUNS
  QUERY: p99          p99 latency by service (quantile_cont)
         service-map  the service map recomputed from raw spans: per-minute span
                      metrics, caller/callee pairs joined on (trace id, parent id),
                      root calls and unanswered calls, each with latency quantiles
         search       Tempo's {resource.service.name="service-07" && duration > 500ms}
                      limit 20: the 20 newest matching traces and their spans
         rate         {} | rate() by (resource.service.name): spans per service per
                      15 s step (Tempo's alignment), divided by the step
         quantiles    {} | quantile_over_time(duration, .5, .9, .99) by
                      (resource.service.name): exact quantiles per service per step

Each prints one line: `<label>, DuckDB <version>: median <ms>ms of <runs> (<rows> rows)`.

The DuckDB service map is a little lighter than tracelake's: unanswered calls
are grouped by the dedicated peer columns only (tracelake also reads six
attributes from the map to name inferred nodes) and links between traces are
left out, so the ratio favours DuckDB.
"""
import os
import sys
import time

import duckdb

query, glob, start_ns, end_ns, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
SLACK_NS = 5 * 60 * 1_000_000_000
# Blocks do not store duration_ns (tracelake derives it on read; see
# storage/src/layout.rs): DuckDB derives it the same way. The bench's blocks
# are always written fresh, in today's layout.
spans = f"(SELECT *, greatest(epoch_ns(end_time) - epoch_ns(start_time), 0) AS duration_ns FROM read_parquet('{glob}'))"
# The bench's service names may carry a prefix (TRACELAKE_BENCH_SERVICE_PREFIX).
SERVICE_07 = os.environ.get("TRACELAKE_BENCH_SERVICE_PREFIX", "") + "service-07"
assert SERVICE_07.replace("-", "").replace("_", "").isalnum(), "plain service names only"


def window(from_ns, to_ns):
    return f"(SELECT * FROM {spans} WHERE epoch_ns(start_time) BETWEEN {from_ns} AND {to_ns})"


FLAGS = """
    CAST(xray_fault AS BIGINT) AS is_fault,
    CAST(NOT xray_fault AND (xray_error OR xray_throttle) AS BIGINT) AS is_error,
    CAST(NOT xray_fault AND xray_throttle AS BIGINT) AS is_throttle,
    CAST(NOT (xray_fault OR xray_error OR xray_throttle) AS BIGINT) AS is_ok,
    CAST(status_code = 'error' AS BIGINT) AS is_failed"""
VIEW = f"trace_id, span_id, parent_span_id, name, kind, service_name, coalesce(service_type, '') AS service_type, " \
       f"start_time, duration_ns, status_code, remote_namespace, peer_service, db_system, {FLAGS}"
QUANTILES = "quantile_cont(duration_ns, [0.5, 0.9, 0.99])"
W = f"(SELECT {VIEW} FROM {window(start_ns, end_ns)})"
WIDE = f"(SELECT {VIEW} FROM {window(start_ns - SLACK_NS, end_ns + SLACK_NS)})"

QUERIES = {
    "p99": ("p99 by service over raw spans (quantile_cont)", [
        f"SELECT service_name, quantile_cont(duration_ns, 0.99) / 1e9 AS p99_s FROM {spans} "
        "GROUP BY service_name ORDER BY service_name",
    ]),
    "service-map": ("service map, 1 h, recomputed from raw spans", [
        f"""SELECT date_trunc('minute', start_time), service_name, service_type, name, kind, status_code,
               (parent_span_id IS NULL OR kind IN ('server', 'consumer')), count(*), sum(is_ok), sum(is_error),
               sum(is_throttle), sum(is_fault), sum(duration_ns), {QUANTILES}
            FROM {W} GROUP BY ALL""",
        f"""SELECT date_trunc('minute', c.start_time), c.service_name, c.service_type, v.service_name, v.service_type,
               count(*), sum(c.is_ok), sum(c.is_error), sum(c.is_throttle), sum(c.is_fault),
               sum(CASE WHEN c.is_failed = 1 OR v.is_failed = 1 THEN 1 ELSE 0 END),
               sum(c.duration_ns), sum(v.duration_ns),
               quantile_cont(c.duration_ns, [0.5, 0.9, 0.99]), quantile_cont(v.duration_ns, [0.5, 0.9, 0.99])
            FROM {W} c JOIN {WIDE} v ON v.trace_id = c.trace_id AND v.parent_span_id = c.span_id
            WHERE c.kind IN ('client', 'producer') AND v.kind IN ('server', 'consumer')
            GROUP BY ALL""",
        f"""SELECT date_trunc('minute', start_time), service_name, service_type, count(*), sum(is_ok),
               sum(is_error), sum(is_throttle), sum(is_fault), sum(is_failed), sum(duration_ns), {QUANTILES}
            FROM {W} WHERE parent_span_id IS NULL GROUP BY ALL""",
        f"""SELECT date_trunc('minute', c.start_time), c.service_name, c.service_type, c.kind, c.name,
               c.remote_namespace, c.peer_service, c.db_system, count(*), sum(c.is_ok), sum(c.is_error),
               sum(c.is_throttle), sum(c.is_fault), sum(c.is_failed), sum(c.duration_ns),
               quantile_cont(c.duration_ns, [0.5, 0.9, 0.99])
            FROM {W} c LEFT JOIN (SELECT DISTINCT trace_id, parent_span_id FROM {WIDE}
                                  WHERE kind IN ('server', 'consumer')) v
              ON v.trace_id = c.trace_id AND v.parent_span_id = c.span_id
            WHERE c.kind IN ('client', 'producer') AND v.trace_id IS NULL
            GROUP BY ALL""",
    ]),
    "search": ("search {resource.service.name=\"service-07\" && duration > 500ms} limit 20", [
        f"""WITH matched AS (
               SELECT trace_id, max(start_time) AS newest FROM {window(start_ns, end_ns)}
               WHERE service_name = '{SERVICE_07}' AND duration_ns > 500000000
               GROUP BY trace_id ORDER BY newest DESC LIMIT 20)
            SELECT s.trace_id, s.span_id, s.parent_span_id, s.name, s.service_name, s.start_time, s.duration_ns
            FROM {spans} s JOIN matched USING (trace_id)""",
    ]),
}

STEP_NS = 15 * 1_000_000_000
ALIGNED = start_ns - start_ns % STEP_NS - STEP_NS
STEPS = f"(epoch_ns(start_time) - {ALIGNED} - 1) // {STEP_NS}"
IN_RANGE = f"(SELECT * FROM {spans} WHERE epoch_ns(start_time) > {ALIGNED} AND epoch_ns(start_time) <= {end_ns})"
QUERIES["rate"] = ("metrics {} | rate() by (resource.service.name)", [
    f"SELECT service_name, {STEPS} AS step, count(*) / 15.0 FROM {IN_RANGE} GROUP BY ALL",
])
QUERIES["quantiles"] = ("metrics {} | quantile_over_time(duration, .5, .9, .99) by (resource.service.name)", [
    f"SELECT service_name, {STEPS} AS step, quantile_cont(duration_ns, [0.5, 0.9, 0.99]) FROM {IN_RANGE} GROUP BY ALL",
])

label, statements = QUERIES[query]
connection = duckdb.connect()
samples = []
rows = 0
for _ in range(runs):
    started = time.perf_counter()
    rows = sum(len(connection.execute(statement).fetchall()) for statement in statements)
    samples.append(time.perf_counter() - started)
samples.sort()
print(f"{label}, DuckDB {duckdb.__version__}: median {samples[len(samples) // 2] * 1000:.1f}ms of {runs} ({rows} rows)")
