"""Creates the demo table "orders" (with a NEW_AND_OLD_IMAGES stream) on the local moto
server if it is missing, then writes inserts, updates and deletes. Prints the number of changes.
"""
import os
import random
import sys
import time
from decimal import Decimal

import boto3

endpoint = os.environ.get("SHARDBRIDGE_TEST_AWS_ENDPOINT", "http://127.0.0.1:5055")
ddb = boto3.resource("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
client = ddb.meta.client
table_name = sys.argv[1] if len(sys.argv) > 1 else "orders"

if table_name not in client.list_tables()["TableNames"]:
    client.create_table(
        TableName=table_name,
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
table = ddb.Table(table_name)
rng = random.Random(7)
run = int(time.time())
changes = 0
orders = [f"order-{run}-{i:03d}" for i in range(120)]
for oid in orders:
    table.put_item(Item={
        "order_id": oid,
        "status": "placed",
        "total": Decimal(f"{rng.randint(100, 99999)}.{rng.randint(0, 99):02d}"),
        "items": [{"sku": f"sku-{rng.randint(1, 50)}", "qty": rng.randint(1, 5)}],
        "tags": {"web", rng.choice(["gift", "express", "standard"])},
        "customer": {"id": f"c-{rng.randint(1, 40)}", "vip": rng.random() < 0.2},
    })
    changes += 1
for oid in rng.sample(orders, 100):
    table.update_item(
        Key={"order_id": oid},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": "shipped"},
    )
    changes += 1
for oid in rng.sample(orders, 80):
    table.delete_item(Key={"order_id": oid})
    changes += 1
print(changes)
