#!/usr/bin/env python3
"""Fault-injecting HTTP proxy for Kinesis Data Streams (kinesalite) tests.

Sits between an AWS SDK client (aws-sdk-kinesis, awsJson1_1 protocol) and a
Kinesis emulator such as kinesalite, forwards every request unchanged, and
injects failures into PutRecords calls so that partial-failure retry logic can
be tested.  Python 3.11+, standard library only.

Usage:
  python3 scripts/kinesis_fault_proxy.py --listen 127.0.0.1:0 \\
      --upstream http://127.0.0.1:4567 [--fail-fraction 0.3] [--fail-every N] \\
      [--fail-code ProvisionedThroughputExceededException] [--seed S] \\
      [--throttle-calls K] [--throttle-fraction P] [--verbose]

Once it accepts connections it prints exactly one line to stdout (flushed):
  LISTENING 127.0.0.1:<port>
Nothing else is ever written to stdout; diagnostics go to stderr (warnings
only, unless --verbose).

What it does
------------
* Every request is forwarded to the upstream with the same method, path, headers
  and body.  Hop-by-hop headers (Connection, Keep-Alive, Transfer-Encoding,
  Expect, ...) are dropped, Host is set to the upstream's host:port and
  Content-Length is recomputed.  Chunked request bodies are de-chunked, and
  `Expect: 100-continue` is answered by the proxy itself.  The response (status,
  headers, body) comes back unchanged except for the same hop-by-hop clean-up
  and a correct Content-Length.  Client connections are HTTP/1.1 keep-alive.
* PutRecords (X-Amz-Target ending in ".PutRecords", JSON content type):
  - whole-call throttling: the first K calls (--throttle-calls), and after that
    each call with probability --throttle-fraction, get HTTP 400
    {"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded (injected)"}
    with header x-amzn-ErrorType: ProvisionedThroughputExceededException (the
    same body format kinesalite uses for its own errors).  Nothing is forwarded.
  - per-entry failures: entries are numbered by a global counter (1, 2, 3, ...
    across all calls, in arrival order).  Entry n fails if --fail-every N is
    set and n % N == 0, or if --fail-fraction F is set and a PRF keyed by --seed
    maps n below F.  The decision depends only on (seed, n), so it is
    deterministic for a given arrival order of calls.
    The other entries are forwarded as a re-serialized JSON request (the
    client's SigV4 signature becomes stale; kinesalite does not verify
    signatures, it only checks that the Authorization header has Credential,
    SignedHeaders and Signature parameters and that X-Amz-Date/Date exists).
    The client gets Records in the original order: forwarded entries take the
    upstream's result entries in order, injected ones get
    {"ErrorCode": <--fail-code>, "ErrorMessage": "injected by kinesis_fault_proxy"};
    FailedRecordCount = upstream's failed count + injected count.
    If every entry of a call is chosen to fail the upstream is not called.
    If the upstream answers with a non-200 status, that response is passed
    through unchanged (and the injected failures of that call are not counted).
  - PutRecords calls whose body is not JSON (e.g. CBOR, which the Rust SDK
    never sends) or not a valid PutRecords object are passed through unchanged.
* GET /__proxy/stats returns counters as JSON:
    put_records_calls        every PutRecords request received (incl. throttled)
    entries_seen             entries of non-throttled, fault-eligible calls
    entries_failed_injected  entries answered with the injected ErrorCode
    calls_throttled          calls answered with the injected HTTP 400
    failed                   [{"PartitionKey", "Data"}] of injected entry
                             failures, oldest first, last 10,000 only
  plus some extra diagnostic counters and the effective configuration.
* SIGTERM / SIGINT: stop accepting, close the listening socket, exit 0.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import http.client
import http.server
import ipaddress
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid

INJECTED_MESSAGE = "injected by kinesis_fault_proxy"
THROTTLE_TYPE = "ProvisionedThroughputExceededException"
THROTTLE_MESSAGE = "Rate exceeded (injected)"
STATS_PATH = "/__proxy/stats"
FAILED_LOG_MAX = 10_000
MAX_BODY_BYTES = 64 * 1024 * 1024

# RFC 7230 section 6.1 hop-by-hop headers, plus Expect (answered here) and
# Content-Length / Host (recomputed).
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding",
    "upgrade", "expect",
}

# Node's default server keepAliveTimeout is 5 s; do not reuse an idle upstream
# connection older than this, to avoid racing kinesalite closing it.
UPSTREAM_MAX_IDLE_S = 2.0


def log(msg: str) -> None:
    try:
        sys.stderr.write(f"kinesis_fault_proxy: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class ClientError(Exception):
    """A malformed request from the client: answer 400 and close."""


class UpstreamProtocolError(Exception):
    """The upstream answered something that cannot be merged."""


# --------------------------------------------------------------------------
# Fault decisions and counters (shared by all handler threads)


class FaultState:
    def __init__(self, args: argparse.Namespace) -> None:
        self.fail_every: int = args.fail_every
        self.fail_fraction: float = args.fail_fraction
        self.fail_code: str = args.fail_code
        self.throttle_calls: int = args.throttle_calls
        self.throttle_fraction: float = args.throttle_fraction
        self.seed: str = str(args.seed)
        self._key = hashlib.sha256(self.seed.encode()).digest()
        self.lock = threading.Lock()
        self.put_records_calls = 0
        self.entries_seen = 0
        self.entries_failed_injected = 0
        self.entries_failed_upstream = 0
        self.entries_forwarded = 0
        self.calls_throttled = 0
        self.calls_all_failed = 0
        self.calls_upstream_error = 0
        self.calls_passthrough = 0
        self.requests_total = 0
        self.upstream_errors = 0
        self.failed: collections.deque = collections.deque(maxlen=FAILED_LOG_MAX)

    def _u01(self, tag: str, n: int) -> float:
        """Deterministic uniform [0, 1) value for (seed, tag, n)."""
        h = hashlib.blake2b(f"{tag}:{n}".encode(), key=self._key, digest_size=8)
        return int.from_bytes(h.digest(), "big") / 2.0**64

    def begin_call(self, n_entries: int | None) -> tuple[bool, list[bool]]:
        """Account for one PutRecords call.

        n_entries is None for a call that is passed through untouched.
        Returns (throttled, fail_mask)."""
        with self.lock:
            self.put_records_calls += 1
            call_no = self.put_records_calls
            if n_entries is None:
                self.calls_passthrough += 1
                return False, []
            throttled = call_no <= self.throttle_calls or (
                self.throttle_fraction > 0
                and self._u01("throttle", call_no) < self.throttle_fraction
            )
            if throttled:
                self.calls_throttled += 1
                return True, []
            first = self.entries_seen + 1
            self.entries_seen += n_entries
        mask = []
        for n in range(first, first + n_entries):
            fail = bool(self.fail_every) and n % self.fail_every == 0
            if not fail and self.fail_fraction > 0:
                fail = self._u01("entry", n) < self.fail_fraction
            mask.append(fail)
        return False, mask

    def record_result(self, records: list, mask: list[bool], upstream_failed: int,
                      forwarded: int, all_failed: bool) -> None:
        with self.lock:
            self.entries_forwarded += forwarded
            self.entries_failed_upstream += upstream_failed
            if all_failed:
                self.calls_all_failed += 1
            for rec, fail in zip(records, mask):
                if fail:
                    self.entries_failed_injected += 1
                    self.failed.append({
                        "PartitionKey": rec.get("PartitionKey"),
                        "Data": rec.get("Data"),
                    })

    def count(self, attr: str) -> None:
        with self.lock:
            setattr(self, attr, getattr(self, attr) + 1)

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "put_records_calls": self.put_records_calls,
                "entries_seen": self.entries_seen,
                "entries_failed_injected": self.entries_failed_injected,
                "calls_throttled": self.calls_throttled,
                "failed": list(self.failed),
                "entries_forwarded": self.entries_forwarded,
                "entries_failed_upstream": self.entries_failed_upstream,
                "calls_all_failed": self.calls_all_failed,
                "calls_upstream_error": self.calls_upstream_error,
                "calls_passthrough": self.calls_passthrough,
                "requests_total": self.requests_total,
                "upstream_errors": self.upstream_errors,
                "config": {
                    "fail_every": self.fail_every,
                    "fail_fraction": self.fail_fraction,
                    "fail_code": self.fail_code,
                    "seed": self.seed,
                    "throttle_calls": self.throttle_calls,
                    "throttle_fraction": self.throttle_fraction,
                },
            }


# --------------------------------------------------------------------------
# HTTP plumbing


def _new_request_id() -> str:
    return str(uuid.uuid4())


def _new_id2() -> str:
    return base64.b64encode(os.urandom(72)).decode()


def _is_json_content_type(value: str | None) -> bool:
    ctype = (value or "").split(";")[0].strip().lower()
    return ctype.startswith("application/x-amz-json-")


class ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, addr, handler, upstream: urllib.parse.SplitResult,
                 state: FaultState, timeout_s: float, verbose: bool) -> None:
        self.upstream = upstream
        self.upstream_host = upstream.hostname or "127.0.0.1"
        self.upstream_port = upstream.port or (443 if upstream.scheme == "https" else 80)
        self.upstream_netloc = upstream.netloc.rsplit("@", 1)[-1]
        self.upstream_prefix = upstream.path.rstrip("/")
        self.state = state
        self.upstream_timeout = timeout_s
        self.verbose = verbose
        super().__init__(addr, handler)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kinesis_fault_proxy"
    disable_nagle_algorithm = True
    server: ProxyServer

    # -- lifecycle ---------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self._up: http.client.HTTPConnection | None = None
        self._up_last_used = 0.0

    def finish(self) -> None:
        self._close_upstream()
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        if self.server.verbose:
            log(f"{self._peer()} {format % args}")

    def log_error(self, format: str, *args) -> None:  # noqa: A002
        log(f"{self._peer()} {format % args}")

    def _peer(self) -> str:
        return ":".join(str(x) for x in self.client_address[:2])

    # Every method goes through the same path.
    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_GET

    # -- request body --------------------------------------------------------

    def _read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise ClientError("client closed the connection mid-body")
        return data

    def _read_chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ClientError("client closed the connection mid-chunk")
            size_s = line.split(b";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise ClientError(f"bad chunk size line {line[:40]!r}") from None
            if size < 0:
                raise ClientError("negative chunk size")
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise ClientError("request body too large")
            parts.append(self._read_exact(size))
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise ClientError("missing CRLF after chunk data")
        # Trailer section (discarded), ends with an empty line.
        while True:
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
        return b"".join(parts)

    def _read_body(self) -> tuple[bytes, bool]:
        """Returns (body, framed): framed means the request declared a body."""
        te = self.headers.get_all("Transfer-Encoding") or []
        if te:
            codings = [c.strip().lower() for v in te for c in v.split(",") if c.strip()]
            if codings and codings[-1] == "chunked":
                if codings != ["chunked"]:
                    raise ClientError(f"unsupported transfer-coding {te!r}")
                return self._read_chunked(), True
            raise ClientError(f"unsupported transfer-coding {te!r}")
        cl = self.headers.get_all("Content-Length") or []
        if cl:
            values = {v.strip() for v in ",".join(cl).split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise ClientError(f"bad Content-Length {cl!r}")
            n = int(next(iter(values)))
            if n > MAX_BODY_BYTES:
                raise ClientError("request body too large")
            return self._read_exact(n), True
        return b"", False

    # -- responses -----------------------------------------------------------

    def _send(self, status: int, reason: str | None, headers: list[tuple[str, str]],
              body: bytes, upstream_content_length: str | None = None) -> None:
        """Write one complete response (status line, headers, body) in one go."""
        if self.server.verbose:
            self.log_request(status, len(body))
        self.send_response_only(status, reason or None)
        have_date = False
        for name, value in headers:
            low = name.lower()
            if low in HOP_BY_HOP or low == "content-length":
                continue
            if low == "date":
                have_date = True
            self.send_header(name, value)
        if not have_date:
            self.send_header("Date", self.date_time_string())
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        if self.command == "HEAD":
            if upstream_content_length is not None:
                self.send_header("Content-Length", upstream_content_length)
        elif not no_body:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        if not no_body:
            self._headers_buffer.append(body)
        self.flush_headers()

    def _send_json(self, status: int, obj, headers: list[tuple[str, str]]) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        self._send(status, None, headers, body)

    def _aws_headers(self, content_type: str) -> list[tuple[str, str]]:
        return [
            ("x-amzn-RequestId", _new_request_id()),
            ("x-amz-id-2", _new_id2()),
            ("Content-Type", content_type),
        ]

    # -- upstream --------------------------------------------------------------

    def _close_upstream(self) -> None:
        if getattr(self, "_up", None) is not None:
            try:
                self._up.close()
            except OSError:
                pass
            self._up = None

    def _upstream_conn(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = self._up
        if conn is not None:
            stale = time.monotonic() - self._up_last_used > UPSTREAM_MAX_IDLE_S
            if not stale and conn.sock is not None:
                try:
                    readable, _, _ = select.select([conn.sock], [], [], 0)
                    stale = bool(readable)  # EOF or unexpected bytes: unusable
                except (OSError, ValueError):
                    stale = True
            if stale or conn.sock is None:
                self._close_upstream()
                conn = None
        if conn is not None:
            return conn, True
        srv = self.server
        cls = (http.client.HTTPSConnection if srv.upstream.scheme == "https"
               else http.client.HTTPConnection)
        self._up = cls(srv.upstream_host, srv.upstream_port, timeout=srv.upstream_timeout)
        return self._up, False

    def _upstream(self, headers: list[tuple[str, str]], body: bytes, framed: bool
                  ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        srv = self.server
        path = srv.upstream_prefix + self.path if srv.upstream_prefix else self.path
        for attempt in (0, 1):
            conn, reused = self._upstream_conn()
            try:
                conn.putrequest(self.command, path, skip_host=True,
                                skip_accept_encoding=True)
                conn.putheader("Host", srv.upstream_netloc)
                for name, value in headers:
                    conn.putheader(name, value)
                if framed or body:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                data = resp.read()
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                    http.client.RemoteDisconnected):
                # A reused keep-alive connection the upstream closed while idle.
                self._close_upstream()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self._close_upstream()
                raise
            if resp.will_close:
                self._close_upstream()
            else:
                self._up_last_used = time.monotonic()
            return resp.status, resp.reason, resp.getheaders(), data
        raise AssertionError("unreachable")

    def _forward_headers(self) -> list[tuple[str, str]]:
        conn_tokens = {
            t.strip().lower()
            for v in (self.headers.get_all("Connection") or [])
            for t in v.split(",")
        }
        out = []
        for name, value in self.headers.items():
            low = name.lower()
            if low in HOP_BY_HOP or low in conn_tokens or low in ("host", "content-length"):
                continue
            out.append((name, value))
        return out

    # -- dispatch --------------------------------------------------------------

    def _handle(self) -> None:
        state = self.server.state
        state.count("requests_total")
        try:
            body, framed = self._read_body()
        except ClientError as e:
            self.log_error("bad request: %s", e)
            self.close_connection = True
            self._send(400, None, [("Content-Type", "text/plain")], f"{e}\n".encode())
            return

        try:
            if self.command in ("GET", "HEAD") and self.path.split("?", 1)[0] == STATS_PATH:
                self._send_json(200, state.snapshot(), [("Content-Type", "application/json")])
                return
            target = self.headers.get("X-Amz-Target", "")
            if self.command == "POST" and target.endswith(".PutRecords"):
                self._put_records(body, framed)
                return
            status, reason, headers, data = self._upstream(self._forward_headers(), body, framed)
            self._send(status, reason, headers, data, _header(headers, "Content-Length"))
        except (OSError, http.client.HTTPException, UpstreamProtocolError) as e:
            if isinstance(e, (BrokenPipeError, ConnectionResetError)) and self._client_gone():
                self.close_connection = True
                return
            state.count("upstream_errors")
            self.log_error("upstream error for %s %s: %r", self.command, self.path, e)
            self.close_connection = True
            try:
                self._send_json(502, {"__type": "ProxyUpstreamError", "message": str(e)},
                                [("Content-Type", "application/json")])
            except OSError:
                pass

    def _client_gone(self) -> bool:
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            return bool(r) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- PutRecords --------------------------------------------------------------

    def _put_records(self, body: bytes, framed: bool) -> None:
        state = self.server.state
        ctype = self.headers.get("Content-Type", "")
        req = None
        if _is_json_content_type(ctype):
            try:
                req = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                req = None
        records = req.get("Records") if isinstance(req, dict) else None
        if (not isinstance(records, list) or not records
                or not all(isinstance(r, dict) for r in records)):
            state.begin_call(None)
            status, reason, headers, data = self._upstream(self._forward_headers(), body, framed)
            self._send(status, reason, headers, data)
            return

        throttled, mask = state.begin_call(len(records))
        resp_ctype = ctype.split(";")[0].strip()
        if throttled:
            headers = self._aws_headers(resp_ctype)
            headers.append(("x-amzn-ErrorType", THROTTLE_TYPE))
            self._send_json(400, {"__type": THROTTLE_TYPE, "message": THROTTLE_MESSAGE}, headers)
            return

        injected = {"ErrorCode": state.fail_code, "ErrorMessage": INJECTED_MESSAGE}
        n_fail = sum(mask)
        if n_fail == len(records):
            state.record_result(records, mask, 0, 0, all_failed=True)
            self._send_json(200, {"FailedRecordCount": n_fail,
                                  "Records": [dict(injected) for _ in records]},
                            self._aws_headers(resp_ctype))
            return

        if n_fail == 0:
            fwd_body = body
        else:
            fwd = dict(req)
            fwd["Records"] = [r for r, f in zip(records, mask) if not f]
            fwd_body = json.dumps(fwd, separators=(",", ":")).encode()
        status, reason, headers, data = self._upstream(self._forward_headers(), fwd_body, True)
        if status != 200:
            state.count("calls_upstream_error")
            self._send(status, reason, headers, data)
            return
        n_fwd = len(records) - n_fail
        try:
            up = json.loads(data)
            up_records = up["Records"]
            if not isinstance(up_records, list) or len(up_records) != n_fwd:
                raise ValueError(f"upstream returned {len(up_records)} records for {n_fwd}")
            up_failed = int(up.get("FailedRecordCount") or 0)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise UpstreamProtocolError(f"cannot merge upstream PutRecords response: {e}") from e
        if n_fail == 0:
            state.record_result(records, mask, up_failed, n_fwd, all_failed=False)
            self._send(status, reason, headers, data)
            return
        it = iter(up_records)
        merged = [dict(injected) if f else next(it) for f in mask]
        out = dict(up)
        out["FailedRecordCount"] = up_failed + n_fail
        out["Records"] = merged
        state.record_result(records, mask, up_failed, n_fwd, all_failed=False)
        self._send_json(200, out, headers)


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    low = name.lower()
    for k, v in headers:
        if k.lower() == low:
            return v
    return None


# --------------------------------------------------------------------------
# CLI


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:0")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise argparse.ArgumentTypeError("HOST must be an IPv4 loopback address") from None
    if not ip.is_loopback:
        raise argparse.ArgumentTypeError(f"refusing to bind non-loopback address {host}")
    port = int(port_s)
    if port > 65535:
        raise argparse.ArgumentTypeError("port out of range")
    return host, port


def _parse_upstream(value: str) -> urllib.parse.SplitResult:
    u = urllib.parse.urlsplit(value)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise argparse.ArgumentTypeError("expected http://HOST:PORT")
    try:
        u.port
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return u


def _fraction(value: str) -> float:
    f = float(value)
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return f


def _nonneg_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Fault-injecting HTTP proxy for Kinesis PutRecords (kinesalite tests).")
    p.add_argument("--listen", type=_parse_listen, default=("127.0.0.1", 0),
                   help="loopback HOST:PORT to bind; port 0 picks a free one (default 127.0.0.1:0)")
    p.add_argument("--upstream", type=_parse_upstream, required=True,
                   help="upstream base URL, e.g. http://127.0.0.1:4567")
    p.add_argument("--fail-every", type=_nonneg_int, default=0, metavar="N",
                   help="fail every Nth PutRecords entry, counted across all calls (0: off)")
    p.add_argument("--fail-fraction", type=_fraction, default=0.0, metavar="F",
                   help="fail each PutRecords entry with probability F, seeded (default 0)")
    p.add_argument("--fail-code", default="ProvisionedThroughputExceededException",
                   help="ErrorCode of injected entry failures "
                        "(default ProvisionedThroughputExceededException; real Kinesis also "
                        "uses InternalFailure)")
    p.add_argument("--seed", default="0", help="seed for the fault decisions (default 0)")
    p.add_argument("--throttle-calls", type=_nonneg_int, default=0, metavar="K",
                   help="answer the first K PutRecords calls with a whole-call HTTP 400 "
                        "ProvisionedThroughputExceededException")
    p.add_argument("--throttle-fraction", type=_fraction, default=0.0, metavar="P",
                   help="after the first K, throttle each PutRecords call with probability P")
    p.add_argument("--upstream-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="socket timeout for upstream requests (default 60)")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = p.parse_args(argv)

    state = FaultState(args)
    try:
        server = ProxyServer(args.listen, Handler, args.upstream, state,
                             args.upstream_timeout, args.verbose)
    except OSError as e:
        log(f"cannot bind {args.listen[0]}:{args.listen[1]}: {e}")
        return 1

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="serve_forever", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    sys.stdout.write(f"LISTENING {host}:{port}\n")
    sys.stdout.flush()
    if args.verbose:
        log(f"forwarding to {args.upstream.geturl()}; config {state.snapshot()['config']}")

    while not stop.wait(0.5):
        if not thread.is_alive():
            log("server thread died")
            server.server_close()
            return 1
    server.shutdown()
    server.server_close()
    if args.verbose:
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
