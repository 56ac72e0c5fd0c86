"""Exports a trace with the real OpenTelemetry Python SDK to tracelake over
OTLP (gRPC or HTTP), reads it back by id over the query API (protobuf and
JSON), and checks every field against what the SDK recorded.

usage: otlp_roundtrip.py grpc|http OTLP_ENDPOINT QUERY_BASE_URL

Prints one JSON line {"trace_id", "spans"} on success; exits 1 with a diff
on any mismatch.
"""

import json
import sys
import time
import urllib.request

from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context


def make_exporter(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint + "/v1/traces", timeout=30)


def record_trace(protocol):
    resource = Resource.create(
        {
            "service.name": f"checkout-{protocol}",
            "service.namespace": "shop",
            "service.version": "1.2.3",
            "host.cores": 2,
            "deployment.canary": False,
        }
    )
    provider = TracerProvider(resource=resource)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tracelake.e2e", "0.4.2")
    # Odd nanoseconds everywhere: precision loss would show.
    base = time.time_ns() - 5_000_000_000 + 123_457
    root = tracer.start_span(
        "GET /orders/{id}",
        kind=SpanKind.SERVER,
        start_time=base,
        attributes={
            "http.request.method": "GET",
            "http.route": "/orders/{id}",
            "http.response.status_code": 200,
            "sampling.ratio": 0.25,
            "feature.flags": ("new-ui", "fast-path"),
            "retry.delays": (1, 2, 3),
            "cache.hit": True,
        },
    )
    root_ctx = set_span_in_context(root)
    load = tracer.start_span("load-order", context=root_ctx, kind=SpanKind.INTERNAL, start_time=base + 1_001)
    load_ctx = set_span_in_context(load)
    query = tracer.start_span(
        "SELECT orders",
        context=load_ctx,
        kind=SpanKind.CLIENT,
        start_time=base + 2_003,
        attributes={"db.system.name": "postgresql", "db.query.text": "select * from orders where id = $1"},
    )
    query.add_event("rows", attributes={"count": 3, "partial": False, "ratio": 0.5}, timestamp=base + 3_005)
    query.end(end_time=base + 900_007)
    load.end(end_time=base + 1_000_009)
    pay = tracer.start_span(
        "POST /payments",
        context=root_ctx,
        kind=SpanKind.CLIENT,
        start_time=base + 1_100_011,
        attributes={"http.request.method": "POST", "http.response.status_code": 503, "peer.service": "payments"},
    )
    pay.add_event(
        "exception",
        attributes={"exception.type": "TimeoutError", "exception.message": "upstream timed out"},
        timestamp=base + 2_000_013,
    )
    pay.set_status(Status(StatusCode.ERROR, "payment service unavailable"))
    pay.end(end_time=base + 2_100_015)
    publish = tracer.start_span(
        "orders publish",
        context=root_ctx,
        kind=SpanKind.PRODUCER,
        start_time=base + 2_200_017,
        links=[Link(load.get_span_context(), attributes={"link.reason": "caused-by", "link.weight": 7})],
        attributes={"messaging.system": "sqs", "messaging.batch.sizes": (0.5, 1.5), "flags": (True, False)},
    )
    publish.end(end_time=base + 2_300_019)
    consume = tracer.start_span(
        "orders process",
        context=set_span_in_context(publish),
        kind=SpanKind.CONSUMER,
        start_time=base + 2_400_021,
    )
    consume.set_status(Status(StatusCode.OK))
    consume.end(end_time=base + 2_900_023)
    root.end(end_time=base + 3_000_025)
    spans = memory.get_finished_spans()
    return spans


def typed_python(value):
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", value]
    if isinstance(value, float):
        return ["double", value]
    if isinstance(value, str):
        return ["str", value]
    if isinstance(value, (tuple, list)):
        return ["array", [typed_python(item) for item in value]]
    raise TypeError(f"unexpected attribute value {value!r}")


def attrs_python(attributes):
    return sorted([key, typed_python(value)] for key, value in (attributes or {}).items())


def expected_span(span):
    return {
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else "",
        "name": span.name,
        "kind": span.kind.value + 1,
        "start": span.start_time,
        "end": span.end_time,
        "attributes": attrs_python(span.attributes),
        "events": [[e.name, e.timestamp, attrs_python(e.attributes)] for e in span.events],
        "links": [
            [f"{l.context.trace_id:032x}", f"{l.context.span_id:016x}", attrs_python(l.attributes)] for l in span.links
        ],
        "status": [span.status.status_code.value, span.status.description or ""],
        "resource": attrs_python(span.resource.attributes),
        "scope": [span.instrumentation_scope.name, span.instrumentation_scope.version or ""],
    }


def typed_proto(any_value):
    which = any_value.WhichOneof("value")
    if which == "string_value":
        return ["str", any_value.string_value]
    if which == "int_value":
        return ["int", any_value.int_value]
    if which == "double_value":
        return ["double", any_value.double_value]
    if which == "bool_value":
        return ["bool", any_value.bool_value]
    if which == "array_value":
        return ["array", [typed_proto(item) for item in any_value.array_value.values]]
    raise TypeError(f"unexpected proto value kind {which}")


def attrs_proto(attributes):
    return sorted([kv.key, typed_proto(kv.value)] for kv in attributes)


def actual_from_proto(body):
    data = TracesData()
    data.ParseFromString(body)
    spans = []
    for resource_spans in data.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(
                    {
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": s.kind,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "attributes": attrs_proto(s.attributes),
                        "events": [[e.name, e.time_unix_nano, attrs_proto(e.attributes)] for e in s.events],
                        "links": [[l.trace_id.hex(), l.span_id.hex(), attrs_proto(l.attributes)] for l in s.links],
                        "status": [s.status.code, s.status.message],
                        "resource": attrs_proto(resource_spans.resource.attributes),
                        "scope": [scope_spans.scope.name, scope_spans.scope.version],
                    }
                )
    return spans


def typed_json(value):
    if "stringValue" in value:
        return ["str", value["stringValue"]]
    if "intValue" in value:
        return ["int", int(value["intValue"])]
    if "doubleValue" in value:
        return ["double", float(value["doubleValue"])]
    if "boolValue" in value:
        return ["bool", value["boolValue"]]
    if "arrayValue" in value:
        return ["array", [typed_json(item) for item in value["arrayValue"].get("values", [])]]
    raise TypeError(f"unexpected json value {value!r}")


def attrs_json(attributes):
    return sorted([kv["key"], typed_json(kv.get("value", {}))] for kv in attributes or [])


def actual_from_json(body):
    document = json.loads(body)
    spans = []
    for resource_spans in document["batches"]:
        resource = resource_spans.get("resource", {})
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope = scope_spans.get("scope", {})
            for s in scope_spans.get("spans", []):
                status = s.get("status", {})
                spans.append(
                    {
                        "trace_id": s["traceId"].lower(),
                        "span_id": s["spanId"].lower(),
                        "parent_span_id": s.get("parentSpanId", "").lower(),
                        "name": s["name"],
                        "kind": s.get("kind", 0),
                        "start": int(s["startTimeUnixNano"]),
                        "end": int(s["endTimeUnixNano"]),
                        "attributes": attrs_json(s.get("attributes")),
                        "events": [
                            [e["name"], int(e["timeUnixNano"]), attrs_json(e.get("attributes"))]
                            for e in s.get("events", [])
                        ],
                        "links": [
                            [l["traceId"].lower(), l["spanId"].lower(), attrs_json(l.get("attributes"))]
                            for l in s.get("links", [])
                        ],
                        "status": [status.get("code", 0), status.get("message", "")],
                        "resource": attrs_json(resource.get("attributes")),
                        "scope": [scope.get("name", ""), scope.get("version", "")],
                    }
                )
    return spans


def fetch(url, accept):
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def compare(label, expected, actual):
    by_id = {span["span_id"]: span for span in actual}
    problems = []
    if len(actual) != len(expected):
        problems.append(f"{label}: {len(actual)} spans back, {len(expected)} sent")
    for want in expected:
        got = by_id.get(want["span_id"])
        if got is None:
            problems.append(f"{label}: span {want['span_id']} ({want['name']}) missing")
            continue
        for field, value in want.items():
            if got[field] != value:
                problems.append(f"{label}: span {want['name']} field {field}: sent {value!r}, got {got[field]!r}")
    return problems


def main():
    protocol, endpoint, query_base = sys.argv[1], sys.argv[2], sys.argv[3]
    spans = record_trace(protocol)
    exporter = make_exporter(protocol, endpoint)
    result = exporter.export(spans)
    if result != SpanExportResult.SUCCESS:
        print(f"export failed: {result}", file=sys.stderr)
        return 1
    exporter.shutdown()
    expected = [expected_span(span) for span in spans]
    trace_id = expected[0]["trace_id"]
    url = f"{query_base}/api/traces/{trace_id}"
    status, proto_body = fetch(url, "application/protobuf")
    problems = [] if status == 200 else [f"protobuf fetch status {status}"]
    problems += compare("protobuf", expected, actual_from_proto(proto_body))
    status, json_body = fetch(url, "application/json")
    if status != 200:
        problems.append(f"json fetch status {status}")
    problems += compare("json", expected, actual_from_json(json_body))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(json.dumps({"trace_id": trace_id, "spans": len(expected)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
