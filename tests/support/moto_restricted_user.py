"""Sets up a private moto server for the access-denied test, then turns on its IAM checks.

Usage: python moto_restricted_user.py ENDPOINT TABLE STREAM
Creates an IAM user allowed every DynamoDB action (tables and streams) and nothing else,
a table TABLE with a stream, and a Kinesis stream STREAM the user may not touch; then makes
moto enforce IAM on every later request. Prints the user's access key id and secret.
"""

import json
import sys
import urllib.request

import boto3

endpoint, table, stream = sys.argv[1:4]
admin = dict(
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
iam = boto3.client("iam", **admin)
iam.create_user(UserName="shardbridge")
key = iam.create_access_key(UserName="shardbridge")["AccessKey"]
iam.put_user_policy(
    UserName="shardbridge",
    PolicyName="dynamodb-only",
    PolicyDocument=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["dynamodb:*"], "Resource": "*"}
            ],
        }
    ),
)
boto3.client("dynamodb", **admin).create_table(
    TableName=table,
    KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    BillingMode="PAY_PER_REQUEST",
    StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
)
boto3.client("kinesis", **admin).create_stream(StreamName=stream, ShardCount=1)
# From now on every request must be signed by a known identity that is allowed the action.
urllib.request.urlopen(
    urllib.request.Request(
        endpoint + "/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
)
print(key["AccessKeyId"], key["SecretAccessKey"])
