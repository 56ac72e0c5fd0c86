"""The real aws-xray-sdk for Python starts a trace and calls a service
traced by tracelake's gateway plugin (the SDK's httplib patch adds the
X-Amzn-Trace-Id header); its segment goes to tracelake over UDP.

usage: xray_sdk_calls_plugin.py DAEMON_ADDR(host:port) URL
prints JSON: {"trace_id", "segment_id", "call_id" (the subsegment the call is
made in), "answered_header" (the X-Amzn-Trace-Id the service answered)}
"""
import json
import sys
import urllib.request

from aws_xray_sdk.core import patch, xray_recorder
from recording_emitter import RecordingEmitter

daemon, url = sys.argv[1], sys.argv[2]


emitter = RecordingEmitter(daemon)
xray_recorder.configure(
    service="storefront",
    sampling=False,
    context_missing="LOG_ERROR",
    daemon_address=daemon,
    emitter=emitter,
    plugins=(),
)
patch(["httplib"])

segment = xray_recorder.begin_segment("storefront")
# The SDK's httplib patch injects the header of the subsegment open when the
# request is sent, so the call is made inside one, as instrumented apps do.
with xray_recorder.in_subsegment("check-stock") as call:
    with urllib.request.urlopen(url) as response:
        answered = response.headers.get("X-Amzn-Trace-Id")
        response.read()
xray_recorder.end_segment()

calls = [
    sub for document in emitter.sent for sub in document.get("subsegments", [])
    if sub.get("name") == "check-stock"
]
if not calls:
    sys.exit("no check-stock subsegment in " + json.dumps(emitter.sent))
print(json.dumps({
    "trace_id": segment.trace_id,
    "segment_id": segment.id,
    "call_id": calls[0]["id"],
    "answered_header": answered,
}))
