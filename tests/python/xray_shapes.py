"""Checks the raw body of every X-Ray operation tracelake serves against the
output shape of botocore's X-Ray service model, the wire contract real
clients are written against.

usage: xray_shapes.py XRAY_API_BASE
prints JSON: {"checked": [operations], "served": [operations the port
answers], "errors": [...], "unexercised": [...], "bodies": {operation: [raw
bodies]}}

The script drives each operation with real boto3 calls on data shaped like a
real application's (a faulting call chain with an AWS downstream, users,
annotations, a group with insights, sampling rules with and without
attributes, statistics), and catches each raw response body with botocore's
`after-call` event before botocore parses it. Each body is checked
recursively:

- every member name is one of the shape's members;
- every value has the shape's JSON type (structure/map -> object, list ->
  array, string -> string (one of the enum's values when it has one),
  integer/long -> integral number, double/float -> number, boolean -> bool,
  timestamp -> epoch seconds as a number, blob -> base64 string);
- every list and map member of a returned structure is present, empty or
  not, as X-Ray itself sends it (the AWS X-Ray SDK for Node.js drops a
  sampling rule without `Attributes`), and so is every required member.

Every operation of the model that the port does not answer with 404
UnknownOperationException must be among the checked ones, so a new route
cannot go unchecked. `unexercised` lists the nested shapes the data was
meant to reach and did not (a check of an empty list proves nothing).
"""
import base64
import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.request

import boto3
import botocore.session

BASE = sys.argv[1]
model = botocore.session.get_session().get_service_model("xray")
client = boto3.client(
    "xray", endpoint_url=BASE, region_name="us-east-1",
    aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
)

bodies = {}


def capture(http_response, model, **_):
    if http_response.status_code == 200:
        bodies.setdefault(model.name, []).append(http_response.content)


client.meta.events.register("after-call.xray", capture)

errors = []
visited = set()


def check(shape, value, path, trail):
    """Checks `value` against `shape`; `trail` names the shape path for
    the coverage list (list items as `[]`, map values as `{}`)."""
    visited.add(trail)
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            errors.append(f"{path}: {shape.name} is a structure, got {type(value).__name__}")
            return
        for name, item in value.items():
            member = shape.members.get(name)
            if member is None:
                errors.append(f"{path}.{name}: not a member of {shape.name}")
                continue
            check(member, item, f"{path}.{name}", f"{trail}.{name}")
        for name, member in shape.members.items():
            if name in value:
                continue
            if member.type_name in ("list", "map"):
                errors.append(f"{path}.{name}: {member.type_name} member missing (X-Ray sends it, empty or not)")
            elif name in shape.required_members:
                errors.append(f"{path}.{name}: required member missing")
    elif kind == "list":
        if not isinstance(value, list):
            errors.append(f"{path}: list expected, got {type(value).__name__}")
            return
        for index, item in enumerate(value):
            check(shape.member, item, f"{path}[{index}]", f"{trail}[]")
    elif kind == "map":
        if not isinstance(value, dict):
            errors.append(f"{path}: map expected, got {type(value).__name__}")
            return
        for key, item in value.items():
            check(shape.key, key, f"{path} key {key!r}", f"{trail}<key>")
            check(shape.value, item, f"{path}[{key!r}]", f"{trail}{{}}")
    elif kind == "string":
        if not isinstance(value, str):
            errors.append(f"{path}: string expected, got {json.dumps(value)}")
        elif shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} is not one of {shape.enum}")
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: {kind} expected, got {json.dumps(value)}")
    elif kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: {kind} expected, got {json.dumps(value)}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{path}: boolean expected, got {json.dumps(value)}")
    elif kind == "timestamp":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: timestamp as epoch seconds expected, got {json.dumps(value)}")
    elif kind == "blob":
        try:
            base64.b64decode(value, validate=True)
        except Exception:
            errors.append(f"{path}: base64 blob expected, got {json.dumps(value)}")
    else:
        errors.append(f"{path}: shape type {kind} not handled by this check")


def check_bodies():
    for operation, raw_bodies in sorted(bodies.items()):
        output = model.operation_model(operation).output_shape
        for index, raw in enumerate(raw_bodies):
            try:
                value = json.loads(raw)
            except ValueError:
                errors.append(f"{operation}#{index}: body is not JSON: {raw[:200]!r}")
                continue
            check(output, value, f"{operation}#{index}", operation)


# -- data a real application sends --------------------------------------------

now = time.time()


def hex_id(number, width=16):
    return format(number, f"0{width}x")


def trace_id(number):
    return "1-%08x-%s" % (int(now) - 120, hex_id(number, 24))


def application_trace(number, status, backend_status, start):
    """A frontend calling an orders API that reads DynamoDB; the orders API
    faults (with an exception) when `backend_status` is 5xx."""
    trace = trace_id(number)
    front_id, call_id = hex_id(number * 16 + 1), hex_id(number * 16 + 2)
    orders_id, dynamo_id = hex_id(number * 16 + 3), hex_id(number * 16 + 4)
    fault = backend_status >= 500
    frontend = {
        "trace_id": trace, "id": front_id, "name": "web-frontend",
        "origin": "AWS::EC2::Instance",
        "start_time": start, "end_time": start + 0.25,
        "user": "alice",
        "http": {
            "request": {"method": "POST", "url": "https://shop.example.com/checkout",
                        "client_ip": "203.0.113.7", "user_agent": "curl/8.5"},
            "response": {"status": status},
        },
        "annotations": {"customer": "alice", "cart_items": 3, "vip": True},
        "fault": status >= 500, "error": 400 <= status < 500, "throttle": status == 429,
        "subsegments": [{
            "id": call_id, "name": "orders-api", "namespace": "remote",
            "start_time": start + 0.01, "end_time": start + 0.2,
            "http": {"request": {"method": "POST", "url": "http://orders.internal/orders"},
                     "response": {"status": backend_status}},
            "fault": fault,
        }],
    }
    orders = {
        "trace_id": trace, "id": orders_id, "parent_id": call_id, "name": "orders-api",
        "origin": "AWS::ECS::Container",
        "start_time": start + 0.02, "end_time": start + 0.19,
        "http": {"request": {"method": "POST", "url": "http://orders.internal/orders"},
                 "response": {"status": backend_status}},
        "fault": fault,
        "subsegments": [{
            "id": dynamo_id, "name": "DynamoDB", "namespace": "aws",
            "start_time": start + 0.03, "end_time": start + 0.18,
            "aws": {"operation": "GetItem", "table_name": "orders", "region": "us-east-1"},
            "http": {"response": {"status": 500 if fault else 200}},
            "fault": fault,
        }],
    }
    if fault:
        orders["cause"] = {"working_directory": "/srv", "exceptions": [
            {"id": hex_id(number * 16 + 5), "type": "TimeoutError",
             "message": "DynamoDB GetItem timed out", "remote": True,
             "stack": [{"path": "orders.py", "line": 42, "label": "get_order"}]},
        ]}
        orders["subsegments"][0]["cause"] = {"exceptions": [
            {"id": hex_id(number * 16 + 6), "type": "ProvisionedThroughputExceededException",
             "message": "rate exceeded", "remote": True},
        ]}
    return trace, [frontend, orders]


traces = {}
documents = []
for number, (status, backend) in enumerate([(500, 503), (200, 200), (404, 200), (429, 200)], start=1):
    trace, segments = application_trace(number, status, backend, now - 90 + number)
    traces[trace] = segments
    documents.extend(json.dumps(segment) for segment in segments)
# One document X-Ray refuses, so UnprocessedTraceSegments has an entry.
documents.append(json.dumps({"trace_id": "not-a-trace-id", "id": "zz", "name": "broken"}))


def call(name, **args):
    return getattr(client, name)(**args)


def epoch(value):
    return value.timestamp() if isinstance(value, datetime.datetime) else value


# -- ingest ------------------------------------------------------------------

call("put_trace_segments", TraceSegmentDocuments=documents)
call("put_telemetry_records", TelemetryRecords=[{
    "Timestamp": datetime.datetime.fromtimestamp(now, datetime.timezone.utc),
    "SegmentsReceivedCount": 8, "SegmentsSentCount": 8, "SegmentsSpilloverCount": 0,
    "SegmentsRejectedCount": 1,
    "BackendConnectionErrors": {"TimeoutCount": 0, "ConnectionRefusedCount": 1,
                                "HTTPCode4XXCount": 0, "HTTPCode5XXCount": 0,
                                "UnknownHostCount": 0, "OtherCount": 0},
}], EC2InstanceId="i-0123456789abcdef0", Hostname="web-1", ResourceARN="arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0")

# -- sampling ----------------------------------------------------------------


def rule(name, priority, path, reservoir, rate, attributes=None):
    value = {
        "RuleName": name, "Priority": priority, "FixedRate": rate, "ReservoirSize": reservoir,
        "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*",
        "URLPath": path, "ResourceARN": "*", "Version": 1,
    }
    if attributes is not None:
        value["Attributes"] = attributes
    return value


call("create_sampling_rule", SamplingRule=rule("health", 1, "/health", 0, 0.0))
call("create_sampling_rule", SamplingRule=rule("checkout", 2, "/checkout", 2, 0.5, {"tier": "gold"}))
call("get_sampling_rules")
call("update_sampling_rule", SamplingRuleUpdate={"RuleName": "health", "FixedRate": 0.01})
client_id = hex_id(0xabc, 24)
statistics = [
    {"RuleName": name, "ClientID": client_id,
     "Timestamp": datetime.datetime.fromtimestamp(now, datetime.timezone.utc),
     "RequestCount": 10, "SampledCount": 3, "BorrowCount": 1}
    for name in ("health", "checkout", "Default", "no-such-rule")
]
call("get_sampling_targets", SamplingStatisticsDocuments=statistics)
call("get_sampling_statistic_summaries")
call("delete_sampling_rule", RuleName="checkout")

# -- groups ------------------------------------------------------------------

call("create_group", GroupName="faults", FilterExpression="fault",
     InsightsConfiguration={"InsightsEnabled": True, "NotificationsEnabled": False})
call("create_group", GroupName="everything")
call("get_group", GroupName="faults")
call("get_groups")
call("update_group", GroupName="faults", FilterExpression="fault OR error",
     InsightsConfiguration={"InsightsEnabled": True, "NotificationsEnabled": True})

# -- queries -----------------------------------------------------------------

window = {"StartTime": now - 600, "EndTime": now + 60}
deadline = time.time() + 20
while True:
    found = call("get_trace_summaries", **window)["TraceSummaries"]
    if len(found) >= len(traces) or time.time() > deadline:
        break
    time.sleep(0.2)
call("get_trace_summaries", FilterExpression="fault", **window)
call("get_service_graph", **window)
call("get_service_graph", GroupName="faults", **window)
trace_ids = list(traces)
call("batch_get_traces", TraceIds=trace_ids[:4] + [trace_id(0xdead)])
call("get_trace_graph", TraceIds=trace_ids[:2])
call("get_time_series_service_statistics", **window)
call("get_time_series_service_statistics", EntitySelectorExpression='service("orders-api")', **window)
call("get_time_series_service_statistics", EntitySelectorExpression='edge("web-frontend", "orders-api")', **window)
call("delete_group", GroupName="everything")

check_bodies()

# -- every operation the port serves is checked -------------------------------

served = []
for operation in model.operation_names:
    http = model.operation_model(operation).http
    request = urllib.request.Request(BASE + http["requestUri"], data=b"{}", method=http["method"],
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, error_type = response.status, response.headers.get("x-amzn-errortype")
    except urllib.error.HTTPError as error:
        status, error_type = error.code, error.headers.get("x-amzn-errortype")
    if status == 404 and error_type == "UnknownOperationException":
        continue
    served.append(operation)
    if operation not in bodies:
        errors.append(f"{operation}: served at {http['requestUri']} (answered {status}) but not checked")

# Nested shapes the data above must reach: an empty list here would make
# its check vacuous.
EXERCISED = [
    "PutTraceSegments.UnprocessedTraceSegments[].ErrorCode",
    "GetSamplingRules.SamplingRuleRecords[].SamplingRule.Attributes{}",
    "GetSamplingRules.SamplingRuleRecords[].CreatedAt",
    "GetSamplingRules.SamplingRuleRecords[].ModifiedAt",
    "UpdateSamplingRule.SamplingRuleRecord.SamplingRule.FixedRate",
    "DeleteSamplingRule.SamplingRuleRecord.SamplingRule.Attributes{}",
    "GetSamplingTargets.SamplingTargetDocuments[].ReservoirQuotaTTL",
    "GetSamplingTargets.UnprocessedStatistics[].Message",
    "GetSamplingTargets.LastRuleModification",
    "GetSamplingStatisticSummaries.SamplingStatisticSummaries[].Timestamp",
    "CreateGroup.Group.InsightsConfiguration.InsightsEnabled",
    "GetGroups.Groups[].InsightsConfiguration.NotificationsEnabled",
    "GetGroups.Groups[].FilterExpression",
    "UpdateGroup.Group.FilterExpression",
    "GetServiceGraph.Services[].Edges[].ResponseTimeHistogram[].Count",
    "GetServiceGraph.Services[].Edges[].SummaryStatistics.FaultStatistics.TotalCount",
    "GetServiceGraph.Services[].DurationHistogram[].Value",
    "GetServiceGraph.Services[].SummaryStatistics.ErrorStatistics.ThrottleCount",
    "GetTraceSummaries.TraceSummaries[].Annotations{}[].AnnotationValue.NumberValue",
    "GetTraceSummaries.TraceSummaries[].Annotations{}[].AnnotationValue.StringValue",
    "GetTraceSummaries.TraceSummaries[].Annotations{}[].AnnotationValue.BooleanValue",
    "GetTraceSummaries.TraceSummaries[].Users[].ServiceIds[].Name",
    "GetTraceSummaries.TraceSummaries[].Http.HttpStatus",
    "GetTraceSummaries.TraceSummaries[].FaultRootCauses[].Services[].EntityPath[].Exceptions[].Name",
    "GetTraceSummaries.TraceSummaries[].ErrorRootCauses[].Services[].Name",
    "BatchGetTraces.Traces[].Segments[].Document",
    "BatchGetTraces.UnprocessedTraceIds[]",
    "GetTraceGraph.Services[].Edges[].ReferenceId",
    "GetTimeSeriesServiceStatistics.TimeSeriesServiceStatistics[].ServiceSummaryStatistics.TotalResponseTime",
    "GetTimeSeriesServiceStatistics.TimeSeriesServiceStatistics[].EdgeSummaryStatistics.FaultStatistics.TotalCount",
    "GetTimeSeriesServiceStatistics.TimeSeriesServiceStatistics[].ResponseTimeHistogram[].Count",
]
unexercised = [trail for trail in EXERCISED if trail not in visited]

print(json.dumps({
    "checked": sorted(bodies),
    "served": sorted(served),
    "errors": errors,
    "unexercised": unexercised,
    "bodies": {operation: [raw.decode("utf-8", "replace") for raw in raws] for operation, raws in bodies.items()},
}))
