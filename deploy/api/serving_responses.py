"""`POST /v1/responses`, `GET` / `DELETE /v1/responses/{id}`: the OpenAI Responses API as a front door over
the one request pipeline (`Ingress.turn`). The request is translated to Chat Completions by
deploy/api/openai_responses.py (with the stored turns of `previous_response_id` prepended), and the answer
translated back: a Response object with CoE's `coe` trace, or the Responses event stream.

An expert that declares the capability `responses` (a vLLM server serves `/v1/responses` itself) receives
the request natively, as the client sent it (deploy/api/native_responses.py); every other expert gets the
translated Chat Completions body.

Stored responses (`store`, default true as in OpenAI's API) live in the registry database
(`Registry.put_response`) for `COE_RESPONSES_TTL_S` (0: until deleted), owned by the credential that
created them: another key neither reads, continues nor deletes them (404)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from deploy.api import openai_responses as oai
from deploy.api.replies import StreamFailure, Turn
from deploy.api.security import authorization_of, owner_id
from router.errors import BadRequest, NotFound

log = logging.getLogger("coe.ingress")


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


class ResponsesDoor:
    """The Responses front door of one ingress (`ingress`: `deploy.pipeline.ingress.Ingress`: admit,
    turn, body, the registry and settings)."""

    def __init__(self, ingress: Any) -> None:
        self.ingress = ingress

    async def create(self, request: Any) -> Any:
        from fastapi.responses import JSONResponse, StreamingResponse

        ing = self.ingress
        obs = ing.observer.start(request, "POST /v1/responses")
        try:
            await ing.admit(request, obs)
            data = await ing.body(request)
            owner = owner_id(authorization_of(request))
            previous = data.get("previous_response_id")
            if previous is not None and (not isinstance(previous, str) or not previous.strip()):
                raise BadRequest("previous_response_id must be a response id", param="previous_response_id")
            history: list[dict[str, Any]] = []
            if previous:
                history = await asyncio.to_thread(ing.registry.response_history, previous, key_id=owner)
            chat = oai.to_chat(data, history)
            response_id, created = new_response_id(), int(time.time())
            turn = await ing.turn(
                request,
                chat,
                obs,
                previous_response_id=previous or None,
                reply_id=response_id,
            )
            store = data.get("store") is not False
            if turn.items is not None:
                stream = oai.ResponsesStream(response_id, data, created)
                events = self._events(stream, turn, data, owner if store else None)
                return StreamingResponse(
                    events,
                    media_type="text/event-stream",
                    headers={**turn.headers, "cache-control": "no-cache"},
                )
            assert turn.response is not None
            response = oai.from_chat(turn.response, response_id=response_id, body=data, created_at=created)
            response["coe"] = turn.response.get("coe")
            if store:
                await self._store(response, turn, data, owner)
            return JSONResponse(response, headers=turn.headers)
        except BaseException as exc:
            obs.failed(exc)
            raise

    async def _events(
        self, stream: oai.ResponsesStream, turn: Turn, data: dict[str, Any], owner: str | None
    ) -> AsyncIterator[bytes]:
        """The Responses event sequence over the pipeline's chunks; a completed stream is stored (before
        `response.completed` is sent, so the client can continue from it at once)."""
        assert turn.items is not None
        for e in stream.start():
            yield oai.sse(e)
        async for item in turn.items:
            if isinstance(item, StreamFailure):
                for e in stream.fail(item.status, item.message):
                    yield oai.sse(e)
                return
            if "coe" in item and "coe" not in stream.response:
                stream.response["coe"] = item["coe"]  # the first chunk carries the routing trace
            for e in stream.feed(item):
                yield oai.sse(e)
        done = stream.finish()
        if owner is not None:
            await self._store(stream.response, turn, data, owner)
        for e in done:
            yield oai.sse(e)

    async def _store(self, response: dict[str, Any], turn: Turn, data: dict[str, Any], owner: str) -> None:
        """Keep the response for `previous_response_id` and GET; a registry failure is logged, and the
        answer still goes out (only its continuation is lost)."""
        ing = self.ingress
        ttl = ing.settings.responses_ttl_s
        try:
            await asyncio.to_thread(
                ing.registry.put_response,
                id=response["id"],
                key_id=owner,
                expert=str(response.get("model") or ""),
                model=turn.model,
                input_items=oai.input_items(data),
                response=response,
                previous_response_id=data.get("previous_response_id"),
                ttl_s=ttl if ttl > 0 else None,
            )
        except Exception as exc:
            log.warning("storing response %s failed: %s", response.get("id"), type(exc).__name__)

    async def retrieve(self, request: Any, response_id: str) -> Any:
        from fastapi.responses import JSONResponse

        ing = self.ingress
        await ing.authenticate(request)
        owner = owner_id(authorization_of(request))
        record = await asyncio.to_thread(ing.registry.get_response, response_id, key_id=owner)
        if record is None:
            raise _not_found(response_id)
        return JSONResponse(record.response)

    async def delete(self, request: Any, response_id: str) -> Any:
        from fastapi.responses import JSONResponse

        ing = self.ingress
        await ing.authenticate(request)
        owner = owner_id(authorization_of(request))
        if not await asyncio.to_thread(ing.registry.delete_response, response_id, key_id=owner):
            raise _not_found(response_id)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})


def _not_found(response_id: str) -> NotFound:
    return NotFound(
        f"No response found with id '{response_id}'.", param="response_id", code="response_not_found"
    )
