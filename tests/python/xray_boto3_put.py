"""boto3's X-Ray client calls PutTraceSegments against tracelake.

usage: xray_boto3_put.py XRAY_API_BASE < documents.json   (a JSON list of strings)
prints the response without ResponseMetadata, as JSON
"""
import json
import sys

import boto3

documents = json.load(sys.stdin)
client = boto3.client(
    "xray",
    endpoint_url=sys.argv[1],
    region_name="us-east-1",
    aws_access_key_id="AKIDEXAMPLE",
    aws_secret_access_key="secret",
)
response = client.put_trace_segments(TraceSegmentDocuments=documents)
response.pop("ResponseMetadata", None)
print(json.dumps(response))
