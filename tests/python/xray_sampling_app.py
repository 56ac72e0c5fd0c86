"""The aws-xray-sdk for Python with centralized sampling against tracelake.

Rules are created with boto3's xray client (create_sampling_rule); the SDK
polls GetSamplingRules / SamplingTargets from tracelake's X-Ray API and
decides per request, as behind a web framework middleware.

usage: xray_sampling_app.py XRAY_API_HOST:PORT XRAY_UDP_HOST:PORT
prints JSON with the trace ids that were and were not sampled per phase
"""
import json
import os
import sys
import time

# Unsampled requests get real trace ids too (as when they are propagated),
# so the test can show those traces never arrive.
os.environ["AWS_XRAY_NOOP_ID"] = "false"

import boto3
from aws_xray_sdk.core import xray_recorder

api, udp = sys.argv[1], sys.argv[2]
client = boto3.client(
    "xray", endpoint_url="http://" + api, region_name="us-east-1",
    aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
)


def rule(name, priority, path, reservoir, rate):
    return {
        "RuleName": name, "Priority": priority, "FixedRate": rate, "ReservoirSize": reservoir,
        "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*",
        "URLPath": path, "ResourceARN": "*", "Version": 1,
    }


client.create_sampling_rule(SamplingRule=rule("health", 1, "/health", 0, 0.0))
client.create_sampling_rule(SamplingRule=rule("orders", 2, "/orders/*", 0, 1.0))

xray_recorder.configure(
    service="shop", sampling=True, context_missing="LOG_ERROR", plugins=(),
    daemon_address="tcp:%s udp:%s" % (api, udp),
)
sampler = xray_recorder.sampler


def request(path):
    """One request through the SDK, as its middlewares do it."""
    decision = sampler.should_trace({"host": "shop.example.com", "method": "GET", "path": path, "service": "shop"})
    segment = xray_recorder.begin_segment("shop", sampling=1 if decision else 0)
    segment.put_http_meta("url", "https://shop.example.com" + path)
    segment.put_http_meta("method", "GET")
    trace_id = segment.trace_id
    xray_recorder.end_segment()
    return trace_id, bool(decision)


# The first decision starts the pollers; the rule poller fetches at once.
request("/warmup")
deadline = time.time() + 20
while time.time() < deadline and not any(r.name == "health" for r in sampler._cache.rules):
    time.sleep(0.2)

phase1 = {"health": {"sampled": [], "unsampled": []}, "orders": {"sampled": [], "unsampled": []}}
for index in range(30):
    for name, path in (("health", "/health"), ("orders", "/orders/%d" % index)):
        trace_id, sampled = request(path)
        phase1[name]["sampled" if sampled else "unsampled"].append(trace_id)

# Turn /health on; the SDK notices on its next SamplingTargets poll
# (LastRuleModification) and fetches the rules again.
client.update_sampling_rule(SamplingRuleUpdate={"RuleName": "health", "FixedRate": 1.0})
updated_at = time.time()
phase2 = {"sampled": None, "seconds": None, "unsampled_before": 0}
while time.time() - updated_at < 60:
    trace_id, sampled = request("/health")
    if sampled:
        phase2["sampled"] = trace_id
        phase2["seconds"] = time.time() - updated_at
        break
    phase2["unsampled_before"] += 1
    time.sleep(0.25)

print(json.dumps({"phase1": phase1, "phase2": phase2}))
