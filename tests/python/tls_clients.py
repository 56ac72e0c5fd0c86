"""Real clients against a tracelake serving TLS with API keys: the
OpenTelemetry SDK's OTLP gRPC and HTTP exporters, boto3's X-Ray client, and
requests on the Tempo API, each trusting only the test's CA and sending the
key as real deployments configure it.

usage: tls_clients.py CA_FILE OTLP_GRPC_HOSTPORT OTLP_HTTP_BASE XRAY_API_BASE HTTP_BASE
environment: TRACELAKE_TEST_TOKEN, TRACELAKE_TEST_ACCESS_KEY_ID,
TRACELAKE_TEST_SECRET_ACCESS_KEY

Prints one JSON object: the exporters' results, the trace ids they sent,
boto3's PutTraceSegments answer and what the Tempo API returned for each
trace over https.
"""

import json
import os
import sys
import time

import boto3
import grpc
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

ca_file, grpc_endpoint, otlp_http_base, xray_base, http_base = sys.argv[1:6]
token = os.environ["TRACELAKE_TEST_TOKEN"]
auth = {"authorization": f"Bearer {token}"}


def one_span(service):
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("tls").start_span("GET /secure").end()
    spans = memory.get_finished_spans()
    return spans, format(spans[0].context.trace_id, "032x")


with open(ca_file, "rb") as ca:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
grpc_spans, grpc_trace = one_span("tls-grpc")
grpc_result = GrpcExporter(
    endpoint=grpc_endpoint, credentials=credentials, headers=auth, timeout=30
).export(grpc_spans)
http_spans, http_trace = one_span("tls-http")
http_result = HttpExporter(
    endpoint=otlp_http_base + "/v1/traces", certificate_file=ca_file, headers=auth, timeout=30
).export(http_spans)

xray = boto3.client(
    "xray",
    endpoint_url=xray_base,
    region_name="us-east-1",
    verify=ca_file,
    aws_access_key_id=os.environ["TRACELAKE_TEST_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["TRACELAKE_TEST_SECRET_ACCESS_KEY"],
)
now = time.time()
xray_trace = "1-%08x-%s" % (int(now), "5ec0de" * 4)
put = xray.put_trace_segments(
    TraceSegmentDocuments=[
        json.dumps(
            {"name": "tls-xray", "id": "5ec0de5ec0de5ec0", "trace_id": xray_trace,
             "start_time": now - 1, "end_time": now}
        )
    ]
)
put.pop("ResponseMetadata", None)

found = {}
for trace in [grpc_trace, http_trace, xray_trace[2:].replace("-", "")]:
    response = None
    for _ in range(100):
        response = requests.get(f"{http_base}/api/traces/{trace}", headers=auth, verify=ca_file, timeout=30)
        if response.status_code != 404:
            break
        time.sleep(0.1)
    found[trace] = response.status_code

print(json.dumps({
    "grpc_export": grpc_result == SpanExportResult.SUCCESS,
    "http_export": http_result == SpanExportResult.SUCCESS,
    "put_trace_segments": put,
    "found": found,
}))
