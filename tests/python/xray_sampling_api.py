"""boto3's xray client against tracelake's sampling API: every call, and the
errors boto3 must raise as the modeled exceptions.

usage: xray_sampling_api.py XRAY_API_BASE
prints JSON: {step: result or exception class name}
"""
import json
import sys

import boto3
from botocore.config import Config

client = boto3.client(
    "xray", endpoint_url=sys.argv[1], region_name="us-east-1",
    aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
)
# boto3 checks ranges itself; this one lets bad values reach the server.
unchecked = boto3.client(
    "xray", endpoint_url=sys.argv[1], region_name="us-east-1",
    aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
    config=Config(parameter_validation=False),
)


def rule(name, priority, path="*"):
    return {
        "RuleName": name, "Priority": priority, "FixedRate": 0.5, "ReservoirSize": 5,
        "ServiceName": "shop", "ServiceType": "*", "Host": "*", "HTTPMethod": "GET",
        "URLPath": path, "ResourceARN": "*", "Version": 1, "Attributes": {"tier": "gold"},
    }


def attempt(call):
    try:
        return call()
    except client.exceptions.InvalidRequestException as error:
        return {"raised": "InvalidRequestException", "message": error.response["Error"]["Message"]}
    except client.exceptions.RuleLimitExceededException as error:
        return {"raised": "RuleLimitExceededException", "message": error.response["Error"]["Message"]}


def clean(response):
    response.pop("ResponseMetadata", None)
    return json.loads(json.dumps(response, default=str))


results = {}
results["create"] = clean(client.create_sampling_rule(SamplingRule=rule("orders", 10, "/orders/*")))
results["create_second"] = clean(client.create_sampling_rule(SamplingRule=rule("admin", 5, "/admin")))
results["duplicate"] = attempt(lambda: client.create_sampling_rule(SamplingRule=rule("orders", 11)))
results["bad_priority"] = attempt(lambda: unchecked.create_sampling_rule(SamplingRule=rule("p", 0)))
results["rules"] = clean(client.get_sampling_rules())
results["paginated"] = [
    record["SamplingRule"]["RuleName"]
    for page in client.get_paginator("get_sampling_rules").paginate()
    for record in page["SamplingRuleRecords"]
]
results["update"] = clean(client.update_sampling_rule(SamplingRuleUpdate={"RuleName": "orders", "FixedRate": 0.25, "Priority": 1}))
results["update_unknown"] = attempt(lambda: client.update_sampling_rule(SamplingRuleUpdate={"RuleName": "nope", "FixedRate": 0.1}))
results["update_bad_rate"] = attempt(lambda: unchecked.update_sampling_rule(SamplingRuleUpdate={"RuleName": "orders", "FixedRate": 2.0}))
results["update_default"] = clean(client.update_sampling_rule(SamplingRuleUpdate={"RuleName": "Default", "ReservoirSize": 2}))
import datetime
now = datetime.datetime.now(datetime.timezone.utc)
results["targets"] = clean(client.get_sampling_targets(SamplingStatisticsDocuments=[
    {"RuleName": "orders", "ClientID": "0123456789abcdef01234567", "Timestamp": now, "RequestCount": 100, "SampledCount": 30, "BorrowCount": 1},
    {"RuleName": "ghost", "ClientID": "0123456789abcdef01234567", "Timestamp": now, "RequestCount": 1, "SampledCount": 0},
]))
results["summaries"] = clean(client.get_sampling_statistic_summaries())
results["delete_default"] = attempt(lambda: client.delete_sampling_rule(RuleName="Default"))
results["delete_unknown"] = attempt(lambda: client.delete_sampling_rule(RuleName="nope"))
results["delete"] = clean(client.delete_sampling_rule(RuleName="admin"))
results["after_delete"] = [r["SamplingRule"]["RuleName"] for r in client.get_sampling_rules()["SamplingRuleRecords"]]
print(json.dumps(results))
