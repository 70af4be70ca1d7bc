from __future__ import annotations

import json

import httpx
import pytest

from experts.client import OpenAIExpertClient
from router.errors import ExpertBadResponse, ExpertConnectionError, ExpertHTTPError, ExpertTimeout
from tests.experts.helpers import completion, info, request, sse


def client_for(handler, **kw) -> tuple[OpenAIExpertClient, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAIExpertClient(info("a", **kw), http), http


async def test_chat_sends_model_params_and_key_and_prices_usage(monkeypatch):
    seen = {}

    def h(req):
        seen["url"] = str(req.url)
        seen["auth"] = req.headers.get("authorization")
        seen["body"] = json.loads(req.content)
        return httpx.Response(200, json=completion("hi", usage=(1000, 500)))

    monkeypatch.setenv("A_KEY", "sekret")
    c, http = client_for(h, api_key_env="A_KEY", cost_input_per_m=1.0, cost_output_per_m=2.0)
    async with http:
        r = await c.chat(request(temperature=0.1, max_tokens=7, model="ignored"))
    assert seen["url"] == "http://a.test/v1/chat/completions"
    assert seen["auth"] == "Bearer sekret"
    assert seen["body"]["model"] == "a-model" and seen["body"]["max_tokens"] == 7
    assert seen["body"]["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    assert r.content == "hi" and r.expert == "a" and r.finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (1000, 500)
    assert r.cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)


async def test_no_key_header_when_env_var_unset(monkeypatch):
    monkeypatch.delenv("MISSING_KEY", raising=False)
    seen = {}

    def h(req):
        seen["auth"] = req.headers.get("authorization")
        return httpx.Response(200, json=completion("x"))

    c, http = client_for(h, api_key_env="MISSING_KEY")
    async with http:
        await c.chat(request())
    assert seen["auth"] is None


async def test_usage_estimated_when_absent():
    c, http = client_for(
        lambda req: httpx.Response(200, json=completion("a" * 40, usage=None)), cost_output_per_m=1e6
    )
    async with http:
        r = await c.chat(request("x" * 80))
    assert r.usage.completion_tokens == 10
    assert r.usage.prompt_tokens > 0
    assert r.cost_usd == pytest.approx(10.0)


def _raise(exc_type):
    def h(req):
        raise exc_type("boom", request=req)

    return h


@pytest.mark.parametrize(
    ("handler", "err", "retryable"),
    [
        (_raise(httpx.ReadTimeout), ExpertTimeout, True),
        (_raise(httpx.ConnectTimeout), ExpertTimeout, True),
        (_raise(httpx.ConnectError), ExpertConnectionError, True),
        (_raise(httpx.ReadError), ExpertConnectionError, True),
        (_raise(httpx.RemoteProtocolError), ExpertConnectionError, True),
        (lambda req: httpx.Response(500, json={"error": {"message": "kaput"}}), ExpertHTTPError, True),
        (lambda req: httpx.Response(503, text="down"), ExpertHTTPError, True),
        (lambda req: httpx.Response(429, json={"error": "slow down"}), ExpertHTTPError, True),
        (lambda req: httpx.Response(400, json={"error": {"message": "bad"}}), ExpertHTTPError, False),
        (lambda req: httpx.Response(404, text="nope"), ExpertHTTPError, False),
        (lambda req: httpx.Response(200, text="<html>not json"), ExpertBadResponse, False),
        (lambda req: httpx.Response(200, json=[1, 2]), ExpertBadResponse, False),
        (lambda req: httpx.Response(200, json={"choices": []}), ExpertBadResponse, False),
        (lambda req: httpx.Response(200, json={"id": "x"}), ExpertBadResponse, False),
        (
            lambda req: httpx.Response(200, json={"choices": [{"message": {"content": 3}}]}),
            ExpertBadResponse,
            False,
        ),
    ],
)
async def test_chat_error_mapping(handler, err, retryable):
    c, http = client_for(handler)
    async with http:
        with pytest.raises(err) as ei:
            await c.chat(request())
    assert type(ei.value) is err
    assert ei.value.retryable is retryable
    assert ei.value.expert == "a"


async def test_http_error_keeps_upstream_status_and_message():
    c, http = client_for(lambda req: httpx.Response(503, json={"error": {"message": "overloaded"}}))
    async with http:
        with pytest.raises(ExpertHTTPError) as ei:
            await c.chat(request())
    assert ei.value.upstream_status == 503 and "overloaded" in ei.value.message


async def test_stream_yields_chunks_then_usage_and_requests_usage():
    seen = {}

    def h(req):
        seen["body"] = json.loads(req.content)
        return httpx.Response(
            200,
            content=b": keep-alive\n\nevent: message\n" + sse("Hel", "lo", usage=(1000, 2000)),
            headers={"content-type": "text/event-stream"},
        )

    c, http = client_for(h, cost_output_per_m=1.0)
    async with http:
        chunks = [ch async for ch in c.stream(request())]
    assert seen["body"]["stream"] is True and seen["body"]["stream_options"] == {"include_usage": True}
    # every expert chunk is relayed as it came (the finish chunk too), then CoE's final usage chunk
    assert [ch.delta for ch in chunks] == ["Hel", "lo", "", ""]
    assert all(ch.raw is not None and "choices" in ch.raw for ch in chunks[:-1])
    assert chunks[-1].raw == {"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 2000}}
    assert chunks[-2].raw["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (1000, 2000)
    assert chunks[-1].cost_usd == pytest.approx(2000 / 1e6)
    assert all(ch.usage is None for ch in chunks[:-1])


async def test_stream_estimates_usage_without_usage_chunk():
    c, http = client_for(lambda req: httpx.Response(200, content=sse("abcdefgh", usage=None)))
    async with http:
        chunks = [ch async for ch in c.stream(request())]
    assert chunks[-1].usage.completion_tokens == 2


@pytest.mark.parametrize(
    ("body", "err"),
    [
        (b'data: {"choices": [{"delta": {"content": "a"}}]}\n\ndata: {not json}\n\n', ExpertBadResponse),
        (b"<html>oops</html>\n", ExpertBadResponse),
        (b'data: {"choices": "x"}\n\n', ExpertBadResponse),
        (b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n', ExpertConnectionError),  # ended early
        (b'data: {"error": {"message": "engine died"}}\n\n', ExpertHTTPError),
    ],
)
async def test_stream_malformed(body, err):
    c, http = client_for(lambda req: httpx.Response(200, content=body))
    async with http:
        with pytest.raises(err):
            _ = [ch async for ch in c.stream(request())]


async def test_stream_http_error_before_body():
    c, http = client_for(lambda req: httpx.Response(502, text="bad gateway"))
    async with http:
        with pytest.raises(ExpertHTTPError) as ei:
            _ = [ch async for ch in c.stream(request())]
    assert ei.value.upstream_status == 502 and ei.value.retryable


async def test_models_lists_ids_and_maps_errors():
    c, http = client_for(lambda req: httpx.Response(200, json={"data": [{"id": "m1"}, {"id": "m2"}]}))
    async with http:
        assert await c.models() == ["m1", "m2"]
    c, http = client_for(lambda req: httpx.Response(200, json={"data": "nope"}))
    async with http:
        with pytest.raises(ExpertBadResponse):
            await c.models()
    c, http = client_for(_raise(httpx.ConnectError))
    async with http:
        with pytest.raises(ExpertConnectionError):
            await c.models()


async def test_invalid_base_url_is_a_connection_error():
    async with httpx.AsyncClient() as http:
        c = OpenAIExpertClient(info("a", base_url="http://[::1/v1"), http)
        with pytest.raises(ExpertConnectionError) as ei:
            await c.chat(request())
    assert not ei.value.retryable
