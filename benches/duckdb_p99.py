"""p99 latency by service with DuckDB over the Parquet blocks the
service_map bench wrote: the side-by-side figure for its DataFusion query.

usage: duckdb_p99.py PARQUET_GLOB RUNS
"""
import sys
import time

import duckdb

glob, runs = sys.argv[1], int(sys.argv[2])
connection = duckdb.connect()
query = (
    "SELECT service_name, quantile_cont(duration_ns, 0.99) / 1e9 AS p99_s "
    f"FROM read_parquet('{glob}') GROUP BY service_name ORDER BY service_name"
)
samples = []
rows = []
for _ in range(runs):
    started = time.perf_counter()
    rows = connection.execute(query).fetchall()
    samples.append(time.perf_counter() - started)
samples.sort()
print(
    f"p99 by service over raw spans, DuckDB {duckdb.__version__} (quantile_cont): "
    f"median {samples[len(samples) // 2] * 1000:.1f}ms of {runs} ({len(rows)} services)"
)
