"""Runs boto3 xray client calls read from stdin against tracelake.

usage: xray_query_api.py XRAY_API_BASE < calls.json
credentials: TRACELAKE_TEST_ACCESS_KEY_ID / TRACELAKE_TEST_SECRET_ACCESS_KEY
(default: example ones, for a server without keys)
calls.json: [{"call": "get_service_graph", "args": {...}, "paginate": false}, ...]
prints JSON: one result per call, in order: the response (timestamps as
epoch seconds, ResponseMetadata dropped), every page when "paginate" is
set, or {"raised": exception class, "message": ...}.
"""
import datetime
import json
import os
import sys

import boto3
import botocore.exceptions

client = boto3.client(
    "xray", endpoint_url=sys.argv[1], region_name="us-east-1",
    aws_access_key_id=os.environ.get("TRACELAKE_TEST_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    aws_secret_access_key=os.environ.get("TRACELAKE_TEST_SECRET_ACCESS_KEY", "secret"),
)


def plain(value):
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items() if key != "ResponseMetadata"}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def run(call):
    try:
        if call.get("paginate"):
            pages = client.get_paginator(call["call"]).paginate(**call.get("args", {}))
            return {"pages": [plain(page) for page in pages]}
        return plain(getattr(client, call["call"])(**call.get("args", {})))
    except botocore.exceptions.ClientError as error:
        return {"raised": error.response["Error"]["Code"], "message": error.response["Error"]["Message"]}
    except botocore.exceptions.ParamValidationError as error:
        return {"raised": "ParamValidationError", "message": str(error)}


print(json.dumps([run(call) for call in json.load(sys.stdin)]))
