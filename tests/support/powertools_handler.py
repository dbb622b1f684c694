"""A Lambda-style handler written with Powertools for AWS Lambda, served over HTTP for the
`http` sink's test (tests/http_sink.rs): what a team moving its function into a pod runs.

Each POST body is parsed with Powertools' parser model for the source (DynamoDBStreamModel or
KinesisDataStreamModel; a failure to validate answers 500 and is logged) and then processed by
Powertools' BatchProcessor, whose partial batch response is the answer. The record handler
fails a record the first time it sees it when the record is marked (a DynamoDB NewImage with
version 3, or Kinesis data containing "fail"), so the partial response path is exercised.

Usage: powertools_handler.py PORT OUT.jsonl {dynamodb|kinesis}
Each line of OUT: {"validated": N, "handled": [sequence numbers]} or {"invalid": "why"}.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import (
    DynamoDBStreamModel,
    KinesisDataStreamModel,
)

PORT, OUT, SOURCE = int(sys.argv[1]), sys.argv[2], sys.argv[3]
MODEL = DynamoDBStreamModel if SOURCE == "dynamodb" else KinesisDataStreamModel
EVENT_TYPE = EventType.DynamoDBStreams if SOURCE == "dynamodb" else EventType.KinesisDataStreams

lock = threading.Lock()
failed_once = set()


def write(line):
    with lock, open(OUT, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def marked(record):
    if SOURCE == "dynamodb":
        image = record.dynamodb.new_image or {}
        return image.get("version") == 3
    return "fail" in record.kinesis.data_as_text()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        event = json.loads(body)
        try:
            parsed = parse(event=event, model=MODEL)
        except Exception as e:  # a record the model refuses
            write({"invalid": str(e)[:2000]})
            self.answer(500, b"invalid event")
            return
        handled = []

        def record_handler(record):
            seq = (
                record.dynamodb.sequence_number
                if SOURCE == "dynamodb"
                else record.kinesis.sequence_number
            )
            if marked(record) and seq not in failed_once:
                failed_once.add(seq)
                raise ValueError(f"first try of {seq} fails")
            handled.append(seq)

        processor = BatchProcessor(event_type=EVENT_TYPE)
        try:
            response = process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=None
            )
        except BatchProcessingError:
            # Every record failed: Powertools raises, which Lambda sees as a function error.
            write({"validated": len(parsed.Records), "handled": handled})
            self.answer(500, b"every record failed")
            return
        write({"validated": len(parsed.Records), "handled": handled})
        self.answer(200, json.dumps(response).encode())

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
