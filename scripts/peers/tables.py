#!/usr/bin/env python3
"""Helpers of scripts/bench_peers.sh (not measured):

  tables.py mktable TABLE               a table (hash key pk, S) with a NEW_AND_OLD_IMAGES stream
  tables.py rmtable TABLE...            delete tables (missing ones are ignored)
  tables.py load TABLE N [KEYS]         N changes over KEYS items (default 500): the first KEYS
                                        writes insert, the rest modify; BatchWriteItem calls of 25,
                                        as fast as moto takes them. Each item carries `ts`: the
                                        epoch milliseconds just before the call that writes it.
                                        Prints "LOAD t0 t1" (epoch seconds).
  tables.py check STREAM N              reads every shard of the target Kinesis stream from
                                        TRIM_HORIZON; checks that it holds N records with N
                                        distinct eventIDs; latency of each record =
                                        ApproximateArrivalTimestamp (kinesalite) - NewImage.ts.
                                        Prints "CHECK records=… distinct=… p50_ms=… p99_ms=…
                                        max_ms=… last=…" (last: the latest
                                        ApproximateArrivalTimestamp, epoch seconds: when the
                                        target held all its records).
Endpoints from SHARDBRIDGE_TEST_AWS_ENDPOINT and SHARDBRIDGE_TEST_KINESIS_ENDPOINT.
"""
import json, os, sys, time

import boto3

region = os.environ.get("AWS_REGION", "us-east-1")


def ddb():
    return boto3.client("dynamodb", endpoint_url=os.environ["SHARDBRIDGE_TEST_AWS_ENDPOINT"], region_name=region)


def kinesis():
    return boto3.client("kinesis", endpoint_url=os.environ["SHARDBRIDGE_TEST_KINESIS_ENDPOINT"], region_name=region)


def mktable(table):
    ddb().create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


def rmtable(*tables):
    c = ddb()
    for t in tables:
        try:
            c.delete_table(TableName=t)
        except c.exceptions.ResourceNotFoundException:
            pass


def load(table, n, keys=500):
    n, keys = int(n), int(keys)
    c = ddb()
    t0 = time.time()
    for start in range(0, n, 25):
        ts = str(int(time.time() * 1000))
        items = [{"PutRequest": {"Item": {
            "pk": {"S": f"item-{i % keys:04d}"}, "version": {"N": str(i // keys + 1)},
            "ts": {"N": ts}, "pad": {"S": "x" * 100}}}} for i in range(start, min(n, start + 25))]
        req = {table: items}
        while req:  # moto processes everything; kept for honesty
            req = c.batch_write_item(RequestItems=req).get("UnprocessedItems") or None
    print(f"LOAD {t0:.3f} {time.time():.3f}")


def check(stream, n):
    n = int(n)
    c = kinesis()
    lat, ids, records, last = [], set(), 0, 0.0
    shards = c.list_shards(StreamName=stream)["Shards"]
    for s in shards:
        it = c.get_shard_iterator(StreamName=stream, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            page = c.get_records(ShardIterator=it, Limit=10000)
            for r in page["Records"]:
                records += 1
                doc = json.loads(r["Data"])
                ids.add(doc["eventID"])
                ts = int(doc["dynamodb"]["NewImage"]["ts"]["N"])
                arrival = r["ApproximateArrivalTimestamp"].timestamp()
                last = max(last, arrival)
                lat.append(arrival * 1000 - ts)
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            it = page.get("NextShardIterator")
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
    print(f"CHECK records={records} distinct={len(ids)} p50_ms={q(0.5):.0f} p99_ms={q(0.99):.0f} max_ms={q(1.0):.0f} last={last:.3f}")
    return 0 if records == n and len(ids) == n else 1


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit({"mktable": mktable, "rmtable": rmtable, "load": load, "check": check}[cmd](*args) or 0)
