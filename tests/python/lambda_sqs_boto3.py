"""boto3's Lambda and SQS clients against the reference stack.

Usage: lambda_sqs_boto3.py RUNTIME_URL QUEUE_URL ADMIN_KEY

The runtime serves two functions: `picky` (its policy allows only the
principal `function:caller`) and `picky-fails` (same policy, always fails,
dead-letter queue `failed-events`). The script

- invokes both asynchronously (InvocationType='Event') as `function:caller`,
  vouched for by the admin key, and reports the request ids the 202s carry;
- checks that an anonymous caller, and a caller naming a principal without
  the admin key, are refused;
- sends messages with typed attributes to the queue `jobs` and receives
  them with MessageAttributeNames, checking the MD5s against its own
  implementation of SQS's algorithm;
- receives the dead-letter message of `picky-fails`' event.

It prints a JSON report; the Rust test that runs it checks the report
against what the runtime saw.
"""

import hashlib
import json
import struct
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

RUNTIME, QUEUES, ADMIN_KEY = sys.argv[1:4]
CONFIG = Config(retries={"max_attempts": 1})
SESSION = boto3.session.Session(
    aws_access_key_id="AKIDEXAMPLE",
    aws_secret_access_key="secret",
    region_name="us-east-1",
)


def lambda_client(headers):
    client = SESSION.client("lambda", endpoint_url=RUNTIME, config=CONFIG)

    def add_headers(request, **_):
        for name, value in headers.items():
            request.headers[name] = value

    client.meta.events.register("before-sign.lambda.Invoke", add_headers)
    return client


def md5_of_attributes(attributes):
    """SQS's MD5OfMessageAttributes, from the SQS developer guide:
    attributes sorted by name; each name, data type and value as a 4-byte
    big-endian length and the bytes; a transport byte (1 string, 2
    binary) before the value."""
    digest = hashlib.md5()

    def field(data):
        digest.update(struct.pack("!I", len(data)))
        digest.update(data)

    for name in sorted(attributes):
        attribute = attributes[name]
        field(name.encode("utf-8"))
        field(attribute["DataType"].encode("utf-8"))
        if "BinaryValue" in attribute:
            digest.update(bytes([2]))
            field(attribute["BinaryValue"])
        else:
            digest.update(bytes([1]))
            field(attribute["StringValue"].encode("utf-8"))
    return digest.hexdigest()


def error_code(call):
    try:
        call()
    except ClientError as error:
        return error.response["Error"]["Code"], error.response["ResponseMetadata"][
            "HTTPStatusCode"
        ]
    return None


report = {}

# Asynchronous invokes from the one principal the policy allows.
trusted = lambda_client(
    {"x-tracelake-principal": "function:caller", "x-tracelake-admin-key": ADMIN_KEY}
)
for function in ["picky", "picky-fails"]:
    answer = trusted.invoke(
        FunctionName=function,
        InvocationType="Event",
        Payload=json.dumps({"function": function}).encode(),
    )
    assert answer["StatusCode"] == 202, answer
    report[function] = answer["ResponseMetadata"]["RequestId"]

# Nobody else: anonymous, or naming a principal without the key.
report["anonymous"] = error_code(
    lambda: lambda_client({}).invoke(FunctionName="picky", InvocationType="Event")
)
report["claimed_identity"] = error_code(
    lambda: lambda_client({"x-tracelake-principal": "function:caller"}).invoke(
        FunctionName="picky", InvocationType="Event"
    )
)
report["wrong_key"] = error_code(
    lambda: lambda_client(
        {
            "x-tracelake-principal": "function:caller",
            "x-tracelake-admin-key": "not-the-admin-key-at-all",
        }
    ).invoke(FunctionName="picky", InvocationType="Event")
)

# Message attributes through SQS.
sqs = SESSION.client("sqs", endpoint_url=QUEUES, config=CONFIG)
jobs = QUEUES + "/queue/jobs"
attributes = {
    "kind": {"DataType": "String", "StringValue": "order é"},
    "amount": {"DataType": "Number", "StringValue": "42.50"},
    "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xffbytes"},
    "trace.format": {"DataType": "String.json", "StringValue": '{"a": 1}'},
}
body = "a job with attributes"
sent = sqs.send_message(QueueUrl=jobs, MessageBody=body, MessageAttributes=attributes)
report["send_md5_body"] = sent["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest()
report["send_md5_attributes"] = sent.get("MD5OfMessageAttributes") == md5_of_attributes(
    attributes
)

received = sqs.receive_message(
    QueueUrl=jobs, MessageAttributeNames=["All"], VisibilityTimeout=0
)["Messages"][0]
report["received_attributes_equal"] = received.get("MessageAttributes") == attributes
report["received_md5_attributes"] = received.get(
    "MD5OfMessageAttributes"
) == md5_of_attributes(attributes)
report["received_md5_body"] = received.get("MD5OfBody") == hashlib.md5(
    body.encode()
).hexdigest()

some = sqs.receive_message(
    QueueUrl=jobs, MessageAttributeNames=["kind", "trace.*"], VisibilityTimeout=0
)["Messages"][0]
wanted = {name: attributes[name] for name in ["kind", "trace.format"]}
report["selected_attributes_equal"] = some.get("MessageAttributes") == wanted
report["selected_md5"] = some.get("MD5OfMessageAttributes") == md5_of_attributes(wanted)
none = sqs.receive_message(QueueUrl=jobs, VisibilityTimeout=0)["Messages"][0]
report["unrequested_attributes_absent"] = "MessageAttributes" not in none

report["bad_number"] = error_code(
    lambda: sqs.send_message(
        QueueUrl=jobs,
        MessageBody="x",
        MessageAttributes={"n": {"DataType": "Number", "StringValue": "many"}},
    )
)
report["reserved_name"] = error_code(
    lambda: sqs.send_message(
        QueueUrl=jobs,
        MessageBody="x",
        MessageAttributes={"AWS.x": {"DataType": "String", "StringValue": "v"}},
    )
)

# The failed event's dead-letter message.
deadline = time.time() + 20
dead = []
while not dead and time.time() < deadline:
    dead = sqs.receive_message(
        QueueUrl=QUEUES + "/queue/failed-events",
        MessageAttributeNames=["All"],
        WaitTimeSeconds=2,
    ).get("Messages", [])
assert dead, "no dead-letter message"
letter = dead[0]
report["dead_letter"] = {
    "body": json.loads(letter["Body"]),
    "attributes": {
        name: {
            "DataType": value["DataType"],
            "StringValue": value.get("StringValue"),
        }
        for name, value in letter.get("MessageAttributes", {}).items()
    },
    "md5_ok": letter.get("MD5OfMessageAttributes")
    == md5_of_attributes(letter.get("MessageAttributes", {})),
}
print(json.dumps(report))
