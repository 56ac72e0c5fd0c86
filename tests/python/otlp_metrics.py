"""Exports a counter and a histogram with the real OpenTelemetry Python
SDK's OTLP metric exporter (gRPC or HTTP) to tracelake.

usage: otlp_metrics.py grpc|http OTLP_ENDPOINT SERVICE_NAME

The counter `invocations` gets 3 (attribute function=resize); the histogram
`invocation.duration` (ms) records 12, 40 and 250. Exits 1 if the export
fails.
"""

import sys

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExportResult,
)
from opentelemetry.sdk.resources import Resource

protocol, endpoint, service = sys.argv[1], sys.argv[2], sys.argv[3]
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    exporter = OTLPMetricExporter(endpoint=endpoint, insecure=True, timeout=30)
else:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    exporter = OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=30)

reader = InMemoryMetricReader()
provider = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader])
meter = provider.get_meter("function-runtime")
counter = meter.create_counter("invocations", description="Function invocations")
histogram = meter.create_histogram("invocation.duration", unit="ms", description="Invocation time")
attributes = {"function": "resize"}
counter.add(2, attributes)
counter.add(1, attributes)
for value in (12, 40, 250):
    histogram.record(value, attributes)

result = exporter.export(reader.get_metrics_data())
exporter.shutdown()
if result != MetricExportResult.SUCCESS:
    print(f"export failed: {result}", file=sys.stderr)
    sys.exit(1)
print("exported")
