"""An OTLP trace receiver for the tests, on the official OpenTelemetry proto types
(opentelemetry-proto) and grpcio: an independent decoder of what tracesift exports.

One process serves OTLP/HTTP (POST /v1/traces, protobuf, gzip or not) and OTLP/gRPC
(TraceService/Export), plus a second gRPC port whose server accepts no compression (grpcio
hides a request's `grpc-encoding` from the handler, so a gzip request is proven by that server
refusing it). Every request is appended to the JSON-lines file given as the first argument:
protocol, whether the body was gzip (HTTP only), the answer given, and for accepted requests
every span (trace id, span id, name, trace state). Decoding is strict: a body that does not
parse, or a span whose ids are not 16 / 8 bytes, is answered 400 / INVALID_ARGUMENT and
recorded as `bad`.

Commands on stdin, one per line (each answered `ok` on stdout):
  http STATUS [RETRY_AFTER]     answer every HTTP request with STATUS (200 accepts)
  grpc CODE [RETRY_DELAY_S]     answer every gRPC call with CODE (0 accepts; RetryInfo if given)
  stop http|grpc                stop listening (connections refused)
  start http|grpc               listen again on the same port
On start it prints `READY http=PORT grpc=PORT grpc_identity=PORT`.

With `--quiet` after the file (the bench's receiver) it records span counts, not spans.
"""

import gzip
import json
import socket
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import duration_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from google.rpc import error_details_pb2, status_pb2  # googleapis-common-protos, via grpcio-status

OUT = open(sys.argv[1], "a", buffering=1)
QUIET = "--quiet" in sys.argv[2:]
LOCK = threading.Lock()
STATE = {"http": (200, None), "grpc": (0, None)}


def record(entry):
    if QUIET and "spans" in entry:
        entry["spans"] = len(entry["spans"])
    with LOCK:
        OUT.write(json.dumps(entry) + "\n")


def decode(body):
    """Spans of an ExportTraceServiceRequest, or raises ValueError."""
    req = trace_service_pb2.ExportTraceServiceRequest()
    req.ParseFromString(body)
    spans = []
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                if len(s.trace_id) != 16 or len(s.span_id) != 8:
                    raise ValueError("span with bad ids")
                spans.append(
                    {
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "name": s.name,
                        "trace_state": s.trace_state,
                        "resource_attrs": len(rs.resource.attributes),
                    }
                )
    return spans


CONNECTIONS = set()


class Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with LOCK:
            CONNECTIONS.add(self.connection)

    def finish(self):
        with LOCK:
            CONNECTIONS.discard(self.connection)
        super().finish()

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(n)
        gz = self.headers.get("content-encoding", "") == "gzip"
        status, retry_after = STATE["http"]
        entry = {"proto": "http", "gzip": gz, "status": status, "path": self.path,
                 "auth": self.headers.get("authorization", "")}
        reply = b""
        if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
            status = 404
            entry["status"] = 404
        elif status == 200:
            try:
                entry["spans"] = decode(gzip.decompress(body) if gz else body)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            except Exception as e:  # noqa: BLE001 - any decode failure is a bad request
                status = 400
                entry["status"] = 400
                entry["bad"] = str(e)
        record(entry)
        self.send_response(status)
        self.send_header("content-type", "application/x-protobuf" if status == 200 else "text/plain")
        if retry_after is not None and status in (429, 503):
            self.send_header("retry-after", str(retry_after))
        if status != 200:
            reply = ("refused by the test receiver: %d" % status).encode()
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, proto):
        self.proto = proto

    def Export(self, request, context):
        md = dict(context.invocation_metadata())
        code, delay = STATE["grpc"] if self.proto == "grpc" else (0, None)
        entry = {"proto": self.proto, "gzip": None, "status": code,
                 "auth": md.get("authorization", "")}
        if code == 0:
            try:
                entry["spans"] = decode(request.SerializeToString())
            except Exception as e:  # noqa: BLE001
                entry["status"] = 3
                entry["bad"] = str(e)
                record(entry)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            record(entry)
            return trace_service_pb2.ExportTraceServiceResponse()
        record(entry)
        status_code = next(c for c in grpc.StatusCode if c.value[0] == code)
        if delay is not None:
            info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(delay)))
            st = status_pb2.Status(code=code, message="test receiver says wait")
            st.details.add().Pack(info)
            context.set_trailing_metadata((("grpc-status-details-bin", st.SerializeToString()),))
        context.abort(status_code, "refused by the test receiver")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    def __init__(self):
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.http = None
        self.grpc = None
        # Accepts only uncompressed messages.
        self.identity = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.compression_enabled_algorithms_bitset", 1)],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces("grpc_identity"), self.identity)
        self.identity_port = self.identity.add_insecure_port("127.0.0.1:0")
        self.identity.start()

    def start_http(self):
        self.http = ThreadingHTTPServer(("127.0.0.1", self.http_port), Http)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stop_http(self):
        self.http.shutdown()
        self.http.server_close()
        # Kept-alive connections too: "down" means nothing answers.
        with LOCK:
            for c in list(CONNECTIONS):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.http = None

    def start_grpc(self):
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces("grpc"), self.grpc)
        self.grpc.add_insecure_port("127.0.0.1:%d" % self.grpc_port)
        self.grpc.start()

    def stop_grpc(self):
        self.grpc.stop(0).wait()
        self.grpc = None


def main():
    s = Servers()
    s.start_http()
    s.start_grpc()
    print("READY http=%d grpc=%d grpc_identity=%d" % (s.http_port, s.grpc_port, s.identity_port), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] in ("http", "grpc"):
            extra = float(words[2]) if len(words) > 2 else None
            if extra is not None and words[0] == "http":
                extra = int(extra)
            STATE[words[0]] = (int(words[1]), extra)
        elif words[0] == "stop":
            getattr(s, "stop_" + words[1])()
        elif words[0] == "start":
            getattr(s, "start_" + words[1])()
        print("ok", flush=True)


if __name__ == "__main__":
    main()
