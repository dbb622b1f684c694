#!/usr/bin/env python3
"""The boto3 peer of scripts/bench_peers.sh: a DynamoDB stream to a Kinesis stream, as a user
would write it in an afternoon. DescribeStream, then for every shard GetShardIterator
(TRIM_HORIZON) and a GetRecords loop (Limit 1000); each record becomes the record a Lambda
function receives (eventID, eventName, eventVersion, eventSource, awsRegion, dynamodb,
eventSourceARN) as JSON, and a page's records go out in PutRecords calls of up to 500 with the
item key as partition key, failed entries retried. A closed shard ends; after an empty page an
open shard waits --idle-ms. It stops when --expect records were put (or, without it, when every
shard gave --empty-polls empty pages in a row). No leases, no checkpoints: a restart reads
everything again.

Usage: forwarder.py --table T --target S [--expect N] [--idle-ms 250] [--empty-polls 3]
Endpoints: SHARDBRIDGE_TEST_AWS_ENDPOINT (moto), SHARDBRIDGE_TEST_KINESIS_ENDPOINT (kinesalite).
"""
import argparse, json, os, sys, time

import boto3

p = argparse.ArgumentParser()
p.add_argument("--table", required=True)
p.add_argument("--target", required=True)
p.add_argument("--expect", type=int, default=0)
p.add_argument("--idle-ms", type=int, default=250)
p.add_argument("--empty-polls", type=int, default=3)
a = p.parse_args()
region = os.environ.get("AWS_REGION", "us-east-1")
ddb = boto3.client("dynamodb", endpoint_url=os.environ.get("SHARDBRIDGE_TEST_AWS_ENDPOINT"), region_name=region)
streams = boto3.client("dynamodbstreams", endpoint_url=os.environ.get("SHARDBRIDGE_TEST_AWS_ENDPOINT"), region_name=region)
kinesis = boto3.client("kinesis", endpoint_url=os.environ.get("SHARDBRIDGE_TEST_KINESIS_ENDPOINT"), region_name=region)

arn = ddb.describe_table(TableName=a.table)["Table"]["LatestStreamArn"]
shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]  # one page: few shards here
its = {s["ShardId"]: streams.get_shard_iterator(StreamArn=arn, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"] for s in shards}
empty = {s: 0 for s in its}


def lambda_record(r):
    d = dict(r["dynamodb"])
    if "ApproximateCreationDateTime" in d:  # boto3 parses it; Lambda gives epoch seconds
        d["ApproximateCreationDateTime"] = int(d["ApproximateCreationDateTime"].timestamp())
    return {"eventID": r["eventID"], "eventName": r["eventName"], "eventVersion": r["eventVersion"],
            "eventSource": r["eventSource"], "awsRegion": r["awsRegion"], "dynamodb": d, "eventSourceARN": arn}


def key_of(keys):
    return "|".join(next(iter(keys[k].values())) for k in sorted(keys))


def put(entries):
    while entries:
        out = kinesis.put_records(StreamName=a.target, Records=entries)
        if not out.get("FailedRecordCount"):
            return
        entries = [e for e, r in zip(entries, out["Records"]) if "ErrorCode" in r]
        time.sleep(0.05)


done = 0
while its and not (a.expect and done >= a.expect):
    for shard, it in list(its.items()):
        page = streams.get_records(ShardIterator=it, Limit=1000)
        recs = page["Records"]
        entries = [{"Data": json.dumps(lambda_record(r), separators=(",", ":")).encode(),
                    "PartitionKey": key_of(r["dynamodb"]["Keys"])} for r in recs]
        for i in range(0, len(entries), 500):
            put(entries[i:i + 500])
        done += len(recs)
        empty[shard] = 0 if recs else empty[shard] + 1
        nxt = page.get("NextShardIterator")
        if nxt is None or (not a.expect and empty[shard] >= a.empty_polls):
            del its[shard]
        else:
            its[shard] = nxt
    if its and all(empty[s] for s in its):
        time.sleep(a.idle_ms / 1000)
print(f"forwarder: {done} records", file=sys.stderr)
