"""`POST /v1/messages` and `/v1/messages/count_tokens`: the Anthropic Messages API as a front door over the
one request pipeline (`Ingress.turn`), translated to Chat Completions and back by
deploy/api/anthropic_messages.py.

Anthropic's conventions throughout: the key in `x-api-key` (or `Authorization: Bearer`), every error in
Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`) with the status the same error has
on the other APIs, and a failure after the stream began as an `error` event. The `coe` routing trace
travels in headers (the Message object has no room for it): `x-coe-route` (compact) and, for a complete
answer, `x-coe-trace` (the full trace as JSON)."""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from deploy.api import anthropic_messages as anth
from deploy.api.replies import StreamFailure, Turn
from deploy.api.security import authorization_of
from router.errors import CoeError

log = logging.getLogger("coe.ingress")


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def error_response(exc: BaseException) -> Any:
    """Any error of this front door as Anthropic's error JSON with the right status (never a traceback)."""
    from fastapi.responses import JSONResponse

    headers = None
    if isinstance(exc, anth.AnthropicError):
        return JSONResponse(exc.body(), status_code=exc.status)
    if isinstance(exc, CoeError):
        status, message = exc.status, exc.message
        retry = getattr(exc, "retry_after_s", None)
        headers = {"retry-after": str(max(1, math.ceil(retry)))} if retry is not None else None
    elif isinstance(exc, ValidationError):
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        status, message = 400, f"{where}: {errors[0]['msg']}" if where else "invalid request"
    else:
        log.error("unhandled error on /v1/messages: %s", type(exc).__name__, exc_info=exc)
        status, message = 500, "internal server error"
    return JSONResponse(anth.error_body(status, message), status_code=status, headers=headers)


class MessagesDoor:
    """The Messages front door of one ingress (`ingress`: `deploy.pipeline.ingress.Ingress`)."""

    def __init__(self, ingress: Any) -> None:
        self.ingress = ingress

    async def create(self, request: Any) -> Any:
        from fastapi.responses import JSONResponse, StreamingResponse

        ing = self.ingress
        obs = ing.observer.start(request, "POST /v1/messages")
        try:
            authorization = authorization_of(request, x_api_key=True)
            obs.key_id = ing.key_id(authorization)
            await ing.admit(request, obs, authorization)
            data = await ing.body(request)
            chat = anth.to_chat(data)
            message_id = new_message_id()
            turn = await ing.turn(request, chat, obs)
            if turn.items is not None:
                model = turn.decision.expert_names[0] if turn.decision.experts else str(data.get("model"))
                return StreamingResponse(
                    self._events(anth.MessagesStream(message_id, model), turn),
                    media_type="text/event-stream",
                    headers={**turn.headers, "cache-control": "no-cache"},
                )
            assert turn.response is not None
            message = anth.from_chat(turn.response, message_id=message_id, model=str(turn.response["model"]))
            trace = json.dumps(turn.response.get("coe"), separators=(",", ":"), ensure_ascii=True)
            return JSONResponse(message, headers={**turn.headers, "x-coe-trace": trace})
        except Exception as exc:
            obs.failed(exc)
            return error_response(exc)
        except BaseException as exc:  # cancelled: the client went away
            obs.failed(exc)
            raise

    @staticmethod
    async def _events(stream: anth.MessagesStream, turn: Turn) -> AsyncIterator[bytes]:
        assert turn.items is not None
        for name, data in stream.start():
            yield anth.sse(name, data)
        async for item in turn.items:
            if isinstance(item, StreamFailure):
                for name, data in stream.fail(item.status, item.message):
                    yield anth.sse(name, data)
                return
            if item.get("model") and stream.model != item["model"]:
                stream.model = str(item["model"])
            for name, data in stream.feed(item):
                yield anth.sse(name, data)
        for name, data in stream.finish():
            yield anth.sse(name, data)

    async def count_tokens(self, request: Any) -> Any:
        from fastapi.responses import JSONResponse

        ing = self.ingress
        try:
            await ing.authenticate(request, authorization_of(request, x_api_key=True))
            data = await ing.body(request)
            return JSONResponse({"input_tokens": anth.count_tokens(data)})
        except Exception as exc:
            return error_response(exc)
