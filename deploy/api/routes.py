"""The FastAPI app: thin routes over the ingress (deploy/pipeline/ingress.py) and its front doors, one per
API: Chat Completions (the pipeline's own format), the OpenAI Responses API (deploy/api/serving_responses.py)
and the Anthropic Messages API (deploy/api/serving_messages.py); the admin API and dashboard
(deploy/ops/admin.py); health, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from deploy.api.errors import install_error_handlers
from deploy.api.security import install_cors
from deploy.api.serving_messages import MessagesDoor
from deploy.api.serving_responses import ResponsesDoor
from deploy.ops.admin import install_admin
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

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await ingress.chat(request)

    @app.post("/v1/responses")
    async def create_response(request: Request) -> Any:
        return await responses.create(request)

    @app.get("/v1/responses/{response_id}")
    async def retrieve_response(request: Request, response_id: str) -> Any:
        return await responses.retrieve(request, response_id)

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(request: Request, response_id: str) -> Any:
        return await responses.delete(request, response_id)

    @app.post("/v1/messages")
    async def create_message(request: Request) -> Any:
        return await messages.create(request)

    @app.post("/v1/messages/count_tokens")
    async def count_message_tokens(request: Request) -> Any:
        return await messages.count_tokens(request)

    @app.post("/v1/route")
    async def route(request: Request) -> Any:
        return await ingress.route(request)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Any:
        return await ingress.feedback(request)

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        return await ingress.models(request)

    @app.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> Any:
        return await ingress.model(request, model_id)

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        ok, checks = await ingress.readiness()
        return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

    document: dict[str, Any] = {}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> Any:
        if not document:
            from deploy.api.openapi import openapi_document

            document.update(openapi_document())
        return JSONResponse(document)

    @app.get("/metrics")
    async def metrics(request: Request) -> Any:
        await ingress.check_metrics(request)
        data, content_type = ingress.metrics.render()
        return Response(content=data, media_type=content_type)

    install_admin(app, ingress)
    return app
