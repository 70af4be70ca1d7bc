"""The FastAPI app: thin routes over the ingress (deploy/pipeline/ingress.py) and its front doors, one per
API: Chat Completions (the pipeline's own format), the OpenAI Responses API (deploy/api/serving_responses.py)
and the Anthropic Messages API (deploy/api/serving_messages.py); the admin API and dashboard
(deploy/ops/admin.py); health, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from deploy.api.anthropic_messages import CountTokensBody, MessagesBody
from deploy.api.errors import install_error_handlers
from deploy.api.openai_responses import ResponsesBody
from deploy.api.openapi import (
    AUTH,
    CALL,
    REQUEST,
    AnthropicErrorResponse,
    AnthropicMessage,
    ChatCompletion,
    DeletedResponse,
    FeedbackResponse,
    ModelCard,
    ModelList,
    ResponseObject,
    RouteResponse,
    TokenCount,
    answers,
    plain,
    request_body,
)
from deploy.api.protocol import ChatCompletionBody, RouteBody
from deploy.api.security import install_cors
from deploy.api.serving_messages import MessagesDoor
from deploy.api.serving_responses import ResponsesDoor
from deploy.ops.admin import install_admin
from deploy.pipeline.decisions import FeedbackBody
from deploy.pipeline.metrics import CountRequests
from deploy.serve.drain import DrainGate

#: path -> the `endpoint` label of the request metrics
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/route": "route",
    "/v1/feedback": "feedback",
    "/v1/models": "models",
    "/healthz": "healthz",
    "/readyz": "readyz",
    "/metrics": "metrics",
    "/openapi.json": "openapi",
}


def build_asgi_app(ingress: Any) -> Any:
    """The app of one ingress (`deploy.pipeline.ingress.Ingress`)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title="CoE Router", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    install_cors(app, ingress.settings.cors_origins)
    app.add_middleware(CountRequests, metrics=ingress.metrics, endpoints=ENDPOINTS)
    app.add_middleware(DrainGate, drain=ingress.drain)  # outermost: refuses before anything runs
    responses, messages = ResponsesDoor(ingress, ingress.native), MessagesDoor(ingress)

    @app.post(
        "/v1/chat/completions",
        operation_id="createChatCompletion",
        summary="OpenAI chat completion, routed to the right expert(s)",
        description="`model`: `auto`, a policy alias (`coe-category`, `coe-top-k`, `coe-top-p`, `coe-cost`, "
        "`coe-quality`) or an expert name. Every parameter other than `routing` is passed to the expert "
        "unchanged. `stream: true` answers `text/event-stream` chunks.",
        openapi_extra=request_body(ChatCompletionBody),
        responses=answers(
            ChatCompletion,
            "the expert's answer with the `coe` trace (or SSE chunks)",
            *CALL,
            stream="a chat.completion.chunk object, an {error: ...} object, or [DONE]",
        ),
    )
    async def chat_completions(request: Request) -> Any:
        return await ingress.chat(request)

    @app.post(
        "/v1/responses",
        operation_id="createResponse",
        summary="OpenAI Responses API, routed like chat (translated for Chat Completions experts)",
        description="`store` (default true) keeps the response for `previous_response_id` and GET; an expert "
        "that declares the capability `responses` receives the request natively.",
        openapi_extra=request_body(ResponsesBody),
        responses=answers(
            ResponseObject,
            "a Response with the `coe` trace (or the Responses event stream)",
            *CALL,
            stream="a Responses stream event (response.created ... response.completed, or error)",
        ),
    )
    async def create_response(request: Request) -> Any:
        return await responses.create(request)

    @app.get(
        "/v1/responses/{response_id}",
        operation_id="retrieveResponse",
        summary="A stored response (its owner's key only)",
        responses=answers(ResponseObject, "the stored response", *AUTH, 404),
    )
    async def retrieve_response(request: Request, response_id: str) -> Any:
        return await responses.retrieve(request, response_id)

    @app.delete(
        "/v1/responses/{response_id}",
        operation_id="deleteResponse",
        summary="Delete a stored response (its owner's key only)",
        responses=answers(DeletedResponse, "deleted", *AUTH, 404),
    )
    async def delete_response(request: Request, response_id: str) -> Any:
        return await responses.delete(request, response_id)

    @app.post(
        "/v1/messages",
        operation_id="createMessage",
        summary="Anthropic Messages API, routed like chat; the key in x-api-key or Authorization",
        description="Errors in Anthropic's shape. The routing trace is in the `x-coe-route` and "
        "`x-coe-trace` headers.",
        openapi_extra=request_body(MessagesBody),
        responses=answers(
            AnthropicMessage,
            "a Message (or the Messages event stream)",
            *CALL,
            stream="an Anthropic stream event (message_start ... message_stop, ping, or error)",
            error=AnthropicErrorResponse,
        ),
    )
    async def create_message(request: Request) -> Any:
        return await messages.create(request)

    @app.post(
        "/v1/messages/count_tokens",
        operation_id="countMessageTokens",
        summary="The prompt's token estimate (the one the context check uses)",
        openapi_extra=request_body(CountTokensBody),
        responses=answers(TokenCount, "the estimate", *REQUEST, error=AnthropicErrorResponse),
    )
    async def count_message_tokens(request: Request) -> Any:
        return await messages.count_tokens(request)

    @app.post(
        "/v1/route",
        operation_id="route",
        summary="The routing decision only (no expert is called)",
        openapi_extra=request_body(RouteBody),
        responses=answers(RouteResponse, "the decision", *REQUEST, 404, 503),
    )
    async def route(request: Request) -> Any:
        return await ingress.route(request)

    @app.post(
        "/v1/feedback",
        operation_id="feedback",
        summary="Score a completion (0..1) by its id; query or admin scope",
        openapi_extra=request_body(FeedbackBody),
        responses=answers(FeedbackResponse, "stored", *REQUEST, 404, 503),
    )
    async def feedback(request: Request) -> Any:
        return await ingress.feedback(request)

    @app.get(
        "/v1/models",
        operation_id="listModels",
        summary="The model aliases and the enabled experts",
        responses=answers(ModelList, "models", *AUTH),
    )
    async def models(request: Request) -> Any:
        return await ingress.models(request)

    @app.get(
        "/v1/models/{model_id:path}",
        operation_id="retrieveModel",
        summary="One model card",
        responses=answers(ModelCard, "the model", *AUTH, 404),
    )
    async def model(request: Request, model_id: str) -> Any:
        return await ingress.model(request, model_id)

    @app.get("/healthz", operation_id="healthz", summary="Liveness", responses=plain("alive"))
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        operation_id="readyz",
        summary="Readiness: router, registry and at least one healthy expert",
        responses=plain("ready", "application/json", "503"),
    )
    async def readyz() -> Any:
        ok, checks = await ingress.readiness()
        return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

    document: dict[str, Any] = {}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> Any:
        if not document:
            from deploy.api.openapi import openapi_document

            document.update(openapi_document(app))
        return JSONResponse(document)

    @app.get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics",
        responses=plain("text exposition format", "text/plain"),
    )
    async def metrics(request: Request) -> Any:
        await ingress.check_metrics(request)
        await ingress.metrics.sync()  # the other replicas' latest figures (deploy/pipeline/metrics.py)
        data, content_type = ingress.metrics.render()
        return Response(content=data, media_type=content_type)

    install_admin(app, ingress)
    return app
