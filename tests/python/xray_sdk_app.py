"""An app instrumented with the real aws-xray-sdk for Python.

It records one segment with nested subsegments: a real HTTP call (to
tracelake's own query port, through the SDK's httplib patch), a real AWS call
(boto3's X-Ray client against tracelake's X-Ray API, through the botocore
patch, so namespace aws), and a subsegment that raises. Annotations of all
three types and metadata are set on the segment. The segment reaches
tracelake over UDP, exactly as it would reach the X-Ray daemon.

usage: xray_sdk_app.py DAEMON_ADDR(host:port) HTTP_BASE XRAY_API_BASE
prints JSON: {"trace_id": ..., "segment_id": ..., "documents": [every document sent]}
"""
import json
import os
import sys
import urllib.request

from aws_xray_sdk.core import patch, xray_recorder
from recording_emitter import RecordingEmitter

daemon, http_base, xray_api = sys.argv[1], sys.argv[2], sys.argv[3]

os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


emitter = RecordingEmitter(daemon)
xray_recorder.configure(
    service="shop",
    sampling=False,
    context_missing="LOG_ERROR",
    daemon_address=daemon,
    emitter=emitter,
    plugins=(),
)
patch(["httplib", "botocore"])

import boto3  # noqa: E402  (after patching, as the SDK asks)

segment = xray_recorder.begin_segment("shop")
segment.put_annotation("customer", "c-42")
segment.put_annotation("items", 3)
segment.put_annotation("total", 19.5)
segment.put_annotation("vip", True)
segment.put_metadata("cart", {"skus": ["a-1", "b-2"], "coupon": None}, "default")
segment.put_metadata("debug", "slow path", "diagnostics")
segment.set_user("alice")
segment.put_http_meta("method", "POST")
segment.put_http_meta("url", "https://shop.example.com/checkout")
segment.put_http_meta("status", 200)

with urllib.request.urlopen(http_base + "/api/echo") as response:
    response.read()

client = boto3.client("xray", endpoint_url=xray_api, region_name="us-east-1")
client.put_telemetry_records(TelemetryRecords=[{"Timestamp": 1764424242}])

try:
    with xray_recorder.in_subsegment("validate-cart"):
        raise ValueError("cart is empty")
except ValueError:
    pass

xray_recorder.end_segment()
print(json.dumps({
    "trace_id": segment.trace_id,
    "segment_id": segment.id,
    "documents": emitter.sent,
}))
