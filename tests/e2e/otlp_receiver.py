"""Test OpenTelemetry collectors: one accepts OTLP/HTTP protobuf on POST /v1/traces, the other
OTLP/gRPC (the TraceService's Export call); both keep the decoded spans (stdlib HTTP server or
grpcio, with the opentelemetry-proto message and service definitions)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int  # 1 internal, 2 server, 3 client
    attributes: dict[str, Any]
    status_code: int
    service_name: str
    start_ns: int
    end_ns: int
    trace_state: str
    # The resource's attributes, service.name included.
    resource: dict[str, Any]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def decode(request: ExportTraceServiceRequest) -> list[Span]:
    spans = []
    for rs in request.resource_spans:
        resource = {a.key: _value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append(
                    Span(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        name=s.name,
                        kind=s.kind,
                        attributes={a.key: _value(a.value) for a in s.attributes},
                        status_code=s.status.code,
                        service_name=str(resource.get("service.name", "")),
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        trace_state=s.trace_state,
                        resource=resource,
                    )
                )
    return spans


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.content_types: list[str] = []
        # The number of spans in each accepted export request, in arrival order.
        self.export_sizes: list[int] = []
        # While set, every export is answered 503 (a collector that is down or shedding load);
        # the spans of refused exports are kept apart.
        self.refusing = False
        self.refused: list[Span] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                spans = decode(request)
                with receiver._lock:
                    if receiver.refusing:
                        receiver.refused.extend(spans)
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    receiver.spans.extend(spans)
                    receiver.export_sizes.append(len(spans))
                    receiver.content_types.append(self.headers.get("Content-Type", ""))
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "OtlpReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def wait_for(self, trace_id: str, count: int, timeout: float = 15.0) -> list[Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [s for s in self.spans if s.trace_id == trace_id]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


class OtlpGrpcReceiver:
    """OTLP over gRPC: the collector's TraceService on a free loopback port."""

    def __init__(self) -> None:
        import grpc
        from concurrent import futures

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.spans: list[Span] = []
        self.metadata: list[dict[str, str]] = []
        self._lock = threading.Lock()
        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802 (the service's method name)
                with receiver._lock:
                    receiver.spans.extend(decode(request))
                    receiver.metadata.append({k: v for k, v in context.invocation_metadata()})
                return ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def start(self) -> "OtlpGrpcReceiver":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, trace_id: str, count: int, timeout: float = 15.0) -> list[Span]:
        return OtlpReceiver.wait_for(self, trace_id, count, timeout)  # type: ignore[arg-type]
