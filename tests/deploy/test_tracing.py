"""Tracing and the access log: spans into an in-memory exporter, the client's `traceparent` continued
and handed to the expert (a small real HTTP server on loopback, called by the real gateway and pool),
retries as span events, nothing imported or exported when tracing is off."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deploy.pipeline.gateway import Gateway
from deploy.pipeline.ingress import Ingress
from deploy.pipeline.limits import KeyLimiter
from deploy.pipeline.observe import Observer, key_id_of
from deploy.pipeline.tracing import Tracing, otlp_traces_url
from deploy.settings import Settings
from registry import Registry
from registry import repository as repo
from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter

MSG = [{"role": "user", "content": "What is 2+2?"}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"


class _Expert(BaseHTTPRequestHandler):
    """An OpenAI-compatible expert that fails its first chat call with a 503 (so the pool retries)."""

    seen: list[dict[str, str]] = []
    fail_next = 0

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, json.dumps({"object": "list", "data": [{"id": "m"}]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        if type(self).fail_next > 0:
            type(self).fail_next -= 1
            self._send(503, b'{"error": {"message": "busy"}}')
            return
        if body.get("stream"):
            chunks = [
                {
                    "id": "chatcmpl-s",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m",
                    "choices": [{"index": 0, "delta": {"content": "four"}, "finish_reason": "stop"}],
                },
                {
                    "id": "chatcmpl-s",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m",
                    "choices": [],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
                },
            ]
            data = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            self._send(200, data.encode(), "text/event-stream")
            return
        answer = {
            "id": "chatcmpl-e",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "four"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
        self._send(200, json.dumps(answer).encode())


@pytest.fixture
def expert_url() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Expert)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Expert.seen, _Expert.fail_next = [], 0
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(tmp_path: Any, expert_url: str, exporter: InMemorySpanExporter) -> Any:
    registry = Registry(f"sqlite:///{tmp_path / 'coe.db'}")
    with registry.session() as s:
        for name in ("math", "general"):
            repo.add_expert(s, name=name, base_url=expert_url, model="m", cost_input_per_m=1.0)
    settings = Settings(
        database_url="sqlite://", data_dir=tmp_path, registry_poll_s=60, retries=1, access_log=False
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = Observer(
        tracing=Tracing(provider.get_tracer("test")), limiter=KeyLimiter(registry), decisions=None
    )
    gateway = Gateway(settings, registry=registry)
    ingress = Ingress(settings, FakeRouter(), gateway, registry=registry, observer=observer)
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
        yield c
    await gateway.aclose()
    registry.close()


def _by_name(exporter: InMemorySpanExporter) -> dict[str, Any]:
    return {s.name: s for s in exporter.get_finished_spans()}


async def test_spans_continue_the_client_trace_and_reach_the_expert(traced: Any, exporter: Any) -> None:
    _Expert.fail_next = 1  # the first try answers 503: the pool retries the same expert
    r = await traced.post(
        "/v1/chat/completions", json={"messages": MSG}, headers={"traceparent": TRACEPARENT}
    )
    assert r.status_code == 200, r.text
    spans = _by_name(exporter)
    assert set(spans) >= {
        "POST /v1/chat/completions",
        "coe.route",
        "coe.route.embed",
        "coe.route.classify",
        "coe.route.policy",
        "coe.expert",
    }
    root, route, expert = spans["POST /v1/chat/completions"], spans["coe.route"], spans["coe.expert"]
    assert {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()} == {TRACE_ID}
    assert format(root.parent.span_id, "016x") == CLIENT_SPAN
    assert route.parent.span_id == root.context.span_id and expert.parent.span_id == root.context.span_id
    assert spans["coe.route.embed"].parent.span_id == route.context.span_id
    assert route.attributes["coe.category"] == "math" and route.attributes["coe.policy"] == "category"
    assert expert.attributes["coe.expert"] == "math"
    assert expert.attributes["gen_ai.usage.input_tokens"] == 5
    [event] = expert.events
    assert event.name == "coe.attempt_failed" and event.attributes["coe.expert"] == "math"
    assert root.attributes["http.response.status_code"] == 200
    # both tries carried the expert span's context: same trace, the expert span as parent
    assert len(_Expert.seen) == 2
    expected = f"00-{TRACE_ID}-{format(expert.context.span_id, '016x')}-01"
    assert [h.get("traceparent") for h in _Expert.seen] == [expected, expected]


async def test_a_streamed_request_is_traced_to_its_end(traced: Any, exporter: Any) -> None:
    r = await traced.post(
        "/v1/chat/completions", json={"messages": MSG, "stream": True}, headers={"traceparent": TRACEPARENT}
    )
    assert r.status_code == 200 and "four" in r.text
    spans = _by_name(exporter)
    assert spans["coe.expert"].attributes["gen_ai.usage.output_tokens"] == 1
    assert _Expert.seen[0]["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert spans["POST /v1/chat/completions"].end_time >= spans["coe.expert"].end_time


async def test_without_a_client_trace_a_new_one_starts(traced: Any, exporter: Any) -> None:
    assert (await traced.post("/v1/chat/completions", json={"messages": MSG})).status_code == 200
    root = _by_name(exporter)["POST /v1/chat/completions"]
    assert root.parent is None
    assert _Expert.seen[0]["traceparent"].split("-")[1] == format(root.context.trace_id, "032x")


async def test_errors_are_recorded_on_the_span(traced: Any, exporter: Any) -> None:
    _Expert.fail_next = 10  # every try of every expert fails
    r = await traced.post("/v1/chat/completions", json={"messages": MSG})
    assert r.status_code in (502, 503)
    root = _by_name(exporter)["POST /v1/chat/completions"]
    assert root.attributes["http.response.status_code"] == r.status_code
    assert root.status.status_code.name == "ERROR"


def test_tracing_off_loads_no_sdk_and_passes_the_client_trace_through(tmp_path: Any) -> None:
    code = (
        "import sys; from deploy.settings import Settings; from deploy.pipeline.tracing import Tracing; "
        "import deploy.pipeline.ingress, deploy.pipeline.observe; t = Tracing.from_settings(Settings()); "
        "assert not t.enabled; "
        "tr = t.request({'traceparent': 'x'}); assert tr.expert_start(None) == {'traceparent': 'x'}; "
        "assert t.request({}).expert_start(None) is None; "
        # FastAPI itself imports the OpenTelemetry API; the SDK and the exporter (threads) must stay out
        "import threading; assert threading.active_count() == 1, threading.enumerate(); "
        "assert not [m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))]"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)


def test_otlp_url() -> None:
    assert otlp_traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert otlp_traces_url("http://c:4318/v1/traces/") == "http://c:4318/v1/traces"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def access_lines() -> Any:
    logger = logging.getLogger("coe.access")
    handler = _Lines()
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.mark.parametrize("log_prompts", [False, True])
async def test_access_log_line_per_request(tmp_path: Any, access_lines: Any, log_prompts: bool) -> None:
    reg = FakeRegistry()
    key = "coe_0123456789ab_" + "s" * 30
    reg.keys[key] = ("query",)
    settings = Settings(database_url="sqlite://", data_dir=tmp_path, log_prompts=log_prompts)
    ingress = Ingress(settings, FakeRouter(), FakeGateway(), registry=reg)
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
        ok = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG}, headers=auth)
        await c.post("/v1/chat/completions", json={"messages": MSG})  # no key: 401
        await c.post("/v1/chat/completions", json={"messages": MSG, "stream": True}, headers=auth)
    ingress.observer.close()
    assert [line["status"] for line in access_lines] == [200, 401, 200]
    first, refused, streamed = access_lines
    assert first["id"] == ok.json()["id"] and first["key_id"] == "0123456789ab"
    assert (first["model"], first["policy"], first["expert"]) == ("auto", "category", "math")
    assert (first["prompt_tokens"], first["completion_tokens"]) == (10, 3)
    assert first["cost_usd"] == pytest.approx(1.6e-5) and first["latency_ms"] > 0
    assert first["cache"] is None and first["stream"] is False and first["error"] is None
    assert refused["error"] == "missing_api_key" and refused["key_id"] is None
    assert streamed["stream"] is True and streamed["expert"] == "math"
    assert all(key not in json.dumps(line) for line in access_lines)
    assert all(("prompt" in line) == log_prompts for line in access_lines if line["status"] == 200)
    if log_prompts:
        assert first["prompt"] == "What is 2+2?"


def test_key_id_of() -> None:
    assert key_id_of("Bearer coe_0123456789ab_secret") == "0123456789ab"
    assert key_id_of("Bearer sk-other") is None and key_id_of(None) is None
    assert key_id_of("Bearer coe_short_x") is None


class _Collector(BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector: records what is POSTed to /v1/traces."""

    posts: list[tuple[str, str, bytes]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).posts.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()


async def test_otlp_http_export_when_an_endpoint_is_set(tmp_path: Any) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Collector.posts = []
    try:
        settings = Settings(
            database_url="sqlite://",
            data_dir=tmp_path,
            access_log=False,
            otel_endpoint=f"http://127.0.0.1:{server.server_address[1]}",
        )
        ingress = Ingress(settings, FakeRouter(), FakeGateway(), registry=FakeRegistry())
        assert ingress.observer.tracing.enabled
        transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
            r = await c.post(
                "/v1/chat/completions", json={"messages": MSG}, headers={"traceparent": TRACEPARENT}
            )
            assert r.status_code == 200
        ingress.observer.close()  # flushes the batch processor
    finally:
        server.shutdown()
        server.server_close()
    assert _Collector.posts, "nothing exported"
    path, ctype, body = _Collector.posts[0]
    assert path == "/v1/traces" and ctype == "application/x-protobuf"
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest.FromString(b"".join(p[2] for p in _Collector.posts[:1]))
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert {s.name for s in spans} >= {"POST /v1/chat/completions", "coe.route", "coe.expert"}
    assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
    service = {a.key: a.value.string_value for a in req.resource_spans[0].resource.attributes}
    assert service["service.name"] == "coe-router"
