"""The request rules CoE reads from a chat body: the routing text, what the request needs, and the context
estimate. Everything else in the body passes through untouched (tests/deploy/test_passthrough.py)."""

from __future__ import annotations

import pytest

from deploy.api.protocol import ChatCompletionBody, Message, parse_chat, routing_text
from tests.deploy.doubles import PUBLIC_PATHS

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5000}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def msgs(*items: dict) -> list[Message]:
    return [Message.model_validate(m) for m in items]


def test_routing_text_uses_text_parts_only() -> None:
    m = msgs({"role": "user", "content": [{"type": "text", "text": "What breed is this dog?"}, IMAGE]})
    assert routing_text(m) == "What breed is this dog?"


def test_tool_results_and_calls_are_not_routed_on() -> None:
    m = msgs(
        {"role": "user", "content": "Convert 3 miles to km"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "1", "content": "SELECT * FROM secrets"},
    )
    assert routing_text(m) == "Convert 3 miles to km"


def test_no_user_text_routes_like_the_conversation_it_continues() -> None:
    m = msgs(
        {"role": "system", "content": "You are a SQL assistant."},
        {"role": "assistant", "content": "Let me query the orders table."},
        {"role": "tool", "tool_call_id": "1", "content": "42 rows"},
    )
    assert routing_text(m) == "Let me query the orders table."
    assert (
        routing_text(
            msgs(
                {"role": "developer", "content": "Answer in French."},
                {"role": "tool", "tool_call_id": "1", "content": "x"},
            )
        )
        == "Answer in French."
    )
    assert routing_text(msgs({"role": "user", "content": [IMAGE]})) == ""


def body(**kw: object) -> ChatCompletionBody:
    return ChatCompletionBody.model_validate({"messages": [{"role": "user", "content": "hi"}], **kw})


@pytest.mark.parametrize(
    ("kw", "needs"),
    [
        ({}, set()),
        ({"tools": [TOOL]}, {"tools"}),
        ({"tools": [TOOL], "tool_choice": "none"}, set()),
        ({"functions": [{"name": "f"}]}, {"tools"}),
        ({"response_format": {"type": "json_object"}}, {"json"}),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}}, {"json"}),
        ({"response_format": {"type": "text"}}, set()),
        ({"messages": [{"role": "user", "content": [IMAGE]}]}, {"vision"}),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            {"audio"},
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "tool_call_id": "1", "content": "y"},
                ]
            },
            {"tools"},
        ),
    ],
)
def test_what_a_request_needs(kw: dict, needs: set[str]) -> None:
    assert body(**kw).needs() == needs


def test_single_expert_for_tools_json_and_n() -> None:
    assert body(tools=[TOOL]).single_expert() and body(n=2).single_expert()
    assert body(response_format={"type": "json_object"}).single_expert()
    assert not body().single_expert() and not body(n=1).single_expert()


def test_context_estimate_is_characters_over_four_plus_the_completion_budget() -> None:
    b = body(
        messages=[{"role": "user", "content": "x" * 400}, {"role": "user", "content": [IMAGE]}],
        max_tokens=100,
    )
    assert b.context_tokens() == 100 + 100  # image data is not text
    assert (
        body(messages=[{"role": "user", "content": "x" * 8}], max_completion_tokens=5).context_tokens() == 7
    )


def test_parse_chat_forwards_the_clients_own_json() -> None:
    data = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hi", "name": "ann"}],
        "stream": False,
        "routing": {"k": 2},
        "top_k": 5,
        "guided_json": {"type": "object"},
        "stream_options": {"x": 1},
    }
    _, req = parse_chat(data)
    assert req.messages == ({"role": "user", "content": "hi", "name": "ann"},)
    assert dict(req.params) == {"top_k": 5, "guided_json": {"type": "object"}, "stream_options": {"x": 1}}


async def test_openapi_document_describes_the_endpoints_and_their_errors(tmp_path) -> None:
    import httpx

    from deploy.pipeline.ingress import Ingress
    from deploy.settings import Settings
    from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter

    ingress = Ingress(
        Settings(database_url="sqlite://", data_dir=tmp_path),
        FakeRouter(),
        FakeGateway(),
        registry=FakeRegistry(),
    )
    transport = httpx.ASGITransport(app=ingress.build_asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
        doc = (await c.get("/openapi.json")).json()
        assert (await c.get("/docs")).status_code == 404  # no CDN-served docs page
    assert doc["openapi"].startswith("3.1")
    # the admin API's paths are checked in tests/deploy/test_admin.py
    assert {p for p in doc["paths"] if not p.startswith("/admin/")} == PUBLIC_PATHS
    # generated by FastAPI from the routes' declared models: each API's own answer and error shapes
    paths = doc["paths"]
    ok = "200"
    responses_ok = paths["/v1/responses"]["post"]["responses"][ok]["content"]
    assert responses_ok["application/json"]["schema"]["$ref"] == "#/components/schemas/ResponseObject"
    assert "text/event-stream" in responses_ok
    assert set(paths["/v1/responses/{response_id}"]) == {"get", "delete"}
    messages = paths["/v1/messages"]["post"]
    body = messages["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/MessagesBody"}
    error = messages["responses"]["400"]["content"]["application/json"]["schema"]
    assert error["$ref"] == "#/components/schemas/AnthropicErrorResponse"
    assert "max_tokens" in doc["components"]["schemas"]["MessagesBody"]["required"]
    count = paths["/v1/messages/count_tokens"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert count == {"$ref": "#/components/schemas/CountTokensBody"}
    assert "max_tokens" not in doc["components"]["schemas"]["CountTokensBody"].get("required", [])
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert {"400", "401", "413", "502", "503", "504"} <= set(chat["responses"])
    schemas = doc["components"]["schemas"]
    assert "routing" in schemas["ChatCompletionBody"]["properties"]
    assert schemas["ChatCompletionBody"].get("additionalProperties", True) is not False  # pass-through
    assert set(schemas["ErrorDetail"]["properties"]) == {"message", "type", "param", "code"}
    feedback = doc["paths"]["/v1/feedback"]["post"]
    assert {"200", "400", "401", "403", "404"} <= set(feedback["responses"])
    assert schemas["FeedbackBody"]["properties"]["score"]["maximum"] == 1.0
