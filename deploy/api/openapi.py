"""The service's OpenAPI 3.1 document (`GET /openapi.json`): the endpoints, the chat body with CoE's
`routing` extension (every other OpenAI or vendor field passes through: `additionalProperties`), and the
OpenAI-style error responses each endpoint can give. No `/docs` page: its assets would come from a CDN."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from deploy.api.errors import ErrorResponse
from deploy.api.protocol import ChatCompletionBody, RouteBody
from deploy.pipeline.decisions import FeedbackBody
from router.defaults import AGGREGATION_MODES, POLICY_NAMES

VERSION = "0.1.0"


class ChatCompletion(BaseModel):
    """The expert's own chat.completion body (every field kept) plus CoE's `coe` routing trace."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    coe: dict[str, Any]


class RouteResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    object: str
    categories: list[dict[str, Any]]
    experts: list[dict[str, Any]]
    policy: str


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: str
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str
    data: list[ModelCard]


class FeedbackResponse(BaseModel):
    object: str = "coe.feedback"
    id: str
    score: float
    comment: str


_MODELS: list[type[BaseModel]] = [
    ChatCompletionBody,
    RouteBody,
    ErrorResponse,
    ChatCompletion,
    RouteResponse,
    ModelCard,
    ModelList,
    FeedbackBody,
    FeedbackResponse,
]

_ERRORS = {
    "400": "invalid request (the field is named in `param`), or the expert's own 400 relayed",
    "401": "missing or unknown API key",
    "403": "the key lacks the scope",
    "404": "unknown model or route",
    "408": "the request body did not arrive within COE_BODY_TIMEOUT_S",
    "413": "request body over the size limit",
    "429": "experts at capacity, the key's rpm/tpm reached (`rate_limit_exceeded`, retry-after), "
    "its budget spent (`insufficient_quota`), or too many failed API keys from this client (retry-after)",
    "502": "every eligible expert failed",
    "503": "no healthy expert, or the service is draining",
    "504": "the expert timed out",
}


#: one server-sent event: `data` holds a chat.completion.chunk as JSON (or, mid-stream, an OpenAI error
#: object), and the last event's data is the literal [DONE]
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "a chat.completion.chunk object, an {error: ...} object, or [DONE]",
        },
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: str) -> dict[str, Any]:
    return {c: _json("ErrorResponse", _ERRORS[c]) for c in codes}


def _route_body_needs_text(schema: dict[str, Any] | None) -> None:
    """RouteBody takes `messages` (non-empty) or `text` (not blank): say so, as the code enforces it."""
    if schema is None:
        return
    schema["anyOf"] = [
        {"required": ["messages"], "properties": {"messages": {"type": "array", "minItems": 1}}},
        {"required": ["text"], "properties": {"text": {"type": "string"}}},
    ]
    if "text" in schema.get("properties", {}):  # when given, text wins and must not be blank
        schema["properties"]["text"] = {"anyOf": [{"type": "string", "pattern": "\\S"}, {"type": "null"}]}


def _known_names(schema: dict[str, Any] | None) -> None:
    """`routing.policy` and `routing.aggregate` take the names router/defaults.py defines only."""
    if schema is None:
        return
    for field, names in (("policy", POLICY_NAMES), ("aggregate", AGGREGATION_MODES)):
        if field in schema.get("properties", {}):
            schema["properties"][field] = {"anyOf": [{"enum": sorted(names)}, {"type": "null"}]}


def openapi_document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    components = schemas.get("$defs", {})
    _route_body_needs_text(components.get("RouteBody"))
    _known_names(components.get("RoutingBody"))
    auth = ["401", "403"]
    request_errors = ["400", *auth, "408", "413"]
    chat_errors = [*request_errors, "404", "429", "502", "503", "504"]
    body = {
        "required": True,
        "content": {"application/json": {"schema": _ref("ChatCompletionBody")}},
    }
    paths: dict[str, Any] = {
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI chat completion, routed to the right expert(s)",
                "description": (
                    "`model`: `auto`, a policy alias (`coe-category`, `coe-top-k`, `coe-top-p`, "
                    "`coe-cost`) or an expert name. Every parameter other than `routing` is passed to "
                    "the expert unchanged. "
                    "`stream: true` answers `text/event-stream` chunks."
                ),
                "operationId": "createChatCompletion",
                "requestBody": body,
                "responses": {
                    "200": {
                        "description": "the expert's answer with the `coe` trace (or SSE chunks)",
                        "content": {
                            "application/json": {"schema": _ref("ChatCompletion")},
                            "text/event-stream": {"schema": _SSE_EVENT},
                        },
                    },
                    **_errors(*chat_errors),
                },
            }
        },
        "/v1/route": {
            "post": {
                "summary": "The routing decision only (no expert is called)",
                "operationId": "route",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("RouteBody")}},
                },
                "responses": {
                    "200": _json("RouteResponse", "the decision"),
                    **_errors(*request_errors, "404", "503"),
                },
            }
        },
        "/v1/feedback": {
            "post": {
                "summary": "Score a completion (0..1) by its id; query or admin scope",
                "operationId": "feedback",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("FeedbackBody")}},
                },
                "responses": {
                    "200": _json("FeedbackResponse", "stored"),
                    **_errors(*request_errors, "404", "503"),
                },
            }
        },
        "/v1/models": {
            "get": {
                "summary": "The model aliases and the enabled experts",
                "operationId": "listModels",
                "responses": {"200": _json("ModelList", "models"), **_errors(*auth)},
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                "summary": "One model card",
                "operationId": "retrieveModel",
                "parameters": [
                    {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json("ModelCard", "the model"), **_errors(*auth, "404")},
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "responses": {
                    "200": {
                        "description": "alive",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: router, registry and at least one healthy expert",
                "operationId": "readyz",
                "responses": {
                    code: {
                        "description": what,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                    for code, what in (("200", "ready"), ("503", "not ready"))
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    from deploy.ops.admin import admin_openapi

    admin_paths, admin_schemas = admin_openapi()
    paths.update(admin_paths)
    components.update(admin_schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CoE Router",
            "version": VERSION,
            "description": "One OpenAI-compatible endpoint in front of many specialised LLMs.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }
