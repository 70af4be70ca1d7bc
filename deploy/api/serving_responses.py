"""`POST /v1/responses`, `GET` / `DELETE /v1/responses/{id}`: the OpenAI Responses API as a front door over
the one request pipeline (`Ingress.turn`). The request is translated to Chat Completions by
deploy/api/openai_responses.py (with the stored turns of `previous_response_id` prepended), and the answer
translated back: a Response object with CoE's `coe` trace, or the Responses event stream.

An expert that declares the capability `responses` (a vLLM server serves `/v1/responses` itself) receives
the request natively, as the client sent it (deploy/api/native_responses.py); every other expert gets the
translated Chat Completions body.

Stored responses (`store`, default true as in OpenAI's API) live in the registry database
(`Registry.put_response`) for `COE_RESPONSES_TTL_S` (0: until deleted), owned by the credential that
created them: another key neither reads, continues nor deletes them (404). The write happens in the
background once the answer is ready (it does not add the database's latency to the answer); this
replica's own reads of the id wait for it, and a `previous_response_id` not found is asked again for
up to 0.37 s (another replica may still be writing it) before it is a 404."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from deploy.api import openai_responses as oai
from deploy.api.native_responses import NativeResponses, upstream_body
from deploy.api.replies import StreamFailure, Turn
from deploy.api.responses import route_trace
from deploy.api.security import authorization_of, owner_id
from experts.types import ChatResult, Usage
from router.errors import BadRequest, CoeError, NotFound

log = logging.getLogger("coe.ingress")

#: how long a previous_response_id unknown here is asked again (another replica may be writing it)
UNSTORED_RETRIES = (0.02, 0.05, 0.1, 0.2)


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


class ResponsesDoor:
    """The Responses front door of one ingress (`ingress`: `deploy.pipeline.ingress.Ingress`: admit,
    turn, body, the registry and settings)."""

    def __init__(self, ingress: Any, native: NativeResponses | None = None) -> None:
        self.ingress = ingress
        self.native = native or NativeResponses()
        self._pending: dict[str, asyncio.Task[None]] = {}  # response id -> its write, while it runs

    # ----- an expert that serves the Responses API itself (deploy/api/native_responses.py) -------------
    async def _native(
        self,
        turn: Turn,
        data: dict[str, Any],
        history: list[dict[str, Any]],
        response_id: str,
        owner: str | None,
        obs: Any,
    ) -> Any:
        """The answer of an expert that declares `responses`, or None for every other decision."""
        from fastapi.responses import JSONResponse, StreamingResponse

        decision = turn.decision
        info = (
            self.ingress.snapshot.experts.get(decision.expert_names[0])
            if len(decision.experts) == 1
            else None
        )
        if info is None or "responses" not in info.capabilities:
            return None
        body = upstream_body(data, history, info)
        trace = {**route_trace(decision), "answered_by": info.name, "native": True}
        if turn.affinity is not None:
            trace["affinity"] = turn.affinity
        if data.get("stream") is True:
            with obs.expert_call(decision):
                events = await self.native.stream(info, body)
            relay = self._relay(events, info.name, response_id, trace, turn, data, owner, obs)
            return StreamingResponse(
                relay, media_type="text/event-stream", headers={**turn.headers, "cache-control": "no-cache"}
            )
        with obs.expert_call(decision):
            response = await self.native.create(info, body)
        response.update(id=response_id, model=info.name, coe=trace)
        obs.answered(response_id, _result(info.name, response))
        await self._finished(response, turn, data, owner)
        return JSONResponse(response, headers=turn.headers)

    async def _relay(
        self,
        events: AsyncIterator[dict[str, Any]],
        expert: str,
        response_id: str,
        trace: dict[str, Any],
        turn: Turn,
        data: dict[str, Any],
        owner: str | None,
        obs: Any,
    ) -> AsyncIterator[bytes]:
        """The expert's events, relayed with CoE's response id, the expert's name and the trace on the final
        response; an error mid-stream becomes `error` + `response.failed`, as for translated streams."""
        seq = 0
        try:
            async for event in events:
                seq = max(seq, int(event.get("sequence_number") or 0))
                response = event.get("response")
                if isinstance(response, dict):
                    response.update(id=response_id, model=expert)
                    if event.get("type") in ("response.completed", "response.incomplete", "response.failed"):
                        response["coe"] = trace
                        if event.get("type") != "response.failed":
                            obs.streamed(response_id, expert, _result(expert, response).usage, None)
                            await self._finished(response, turn, data, owner)
                yield oai.sse(event)
        except CoeError as exc:
            obs.failed(exc, response_id)
            failure = {"code": "server_error", "message": exc.message}
            yield oai.sse({"type": "error", "sequence_number": seq + 1, **failure, "param": None})
            failed = {
                "id": response_id,
                "object": "response",
                "status": "failed",
                "error": failure,
                "model": expert,
            }
            yield oai.sse({"type": "response.failed", "sequence_number": seq + 2, "response": failed})

    async def _finished(
        self, response: dict[str, Any], turn: Turn, data: dict[str, Any], owner: str | None
    ) -> None:
        """A native answer completed: remember its expert for the tool calls it returned, and store it."""
        if turn.remember is not None:
            calls = [
                {"id": item["call_id"], "type": "function"}
                for item in response.get("output") or ()
                if isinstance(item, dict) and item.get("type") == "function_call" and item.get("call_id")
            ]
            message = {"role": "assistant", "tool_calls": calls}
            reply = {
                "id": response["id"],
                "model": response["model"],
                "choices": [{"index": 0, "message": message}],
            }
            await turn.remember(str(response["model"]), reply)
        if owner is not None:
            self._store_soon(response, turn, data, owner)

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
                history = await self._history(previous, owner)
            chat = oai.to_chat(data, history)
            response_id, created = new_response_id(), int(time.time())
            store = data.get("store") is not False

            async def native(turn: Turn) -> Any:
                return await self._native(turn, data, history, response_id, owner if store else None, obs)

            turn = await ing.turn(
                request,
                chat,
                obs,
                previous_response_id=previous or None,
                reply_id=response_id,
                divert=native,
            )
            if turn.native is not None:
                return turn.native
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
                self._store_soon(response, turn, data, owner)
            return JSONResponse(response, headers=turn.headers)
        except BaseException as exc:
            obs.failed(exc)
            raise

    async def _events(
        self, stream: oai.ResponsesStream, turn: Turn, data: dict[str, Any], owner: str | None
    ) -> AsyncIterator[bytes]:
        """The Responses event sequence over the pipeline's chunks; a completed stream is stored."""
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
            self._store_soon(stream.response, turn, data, owner)
        for e in done:
            yield oai.sse(e)

    def _store_soon(self, response: dict[str, Any], turn: Turn, data: dict[str, Any], owner: str) -> None:
        """Store in the background: the answer does not wait for the database write (a few ms on SQLite).
        This replica's own reads of the id (GET, DELETE, previous_response_id) wait for it (`_settled`)."""
        response_id = str(response["id"])
        task = asyncio.get_running_loop().create_task(self._store(response, turn, data, owner))
        self._pending[response_id] = task
        task.add_done_callback(lambda _: self._pending.pop(response_id, None))

    async def _history(self, previous: str, owner: str) -> list[dict[str, Any]]:
        """The stored chain ending at `previous`. Written in the background by whichever replica answered,
        so an unknown id is asked again a few times (`UNSTORED_WAIT_S` in all) before it is a 404: a
        continuation that reaches another replica within the write's few milliseconds still finds it."""
        await self._settled(previous)
        registry = self.ingress.registry
        for wait in (*UNSTORED_RETRIES, None):
            try:
                history: list[dict[str, Any]] = await asyncio.to_thread(
                    registry.response_history, previous, key_id=owner
                )
                return history
            except NotFound:
                if wait is None:
                    raise
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _settled(self, response_id: str) -> None:
        """Wait for this replica's pending write of `response_id`, if any."""
        task = self._pending.get(response_id)
        if task is not None:
            await asyncio.shield(task)

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
        await self._settled(response_id)
        record = await asyncio.to_thread(ing.registry.get_response, response_id, key_id=owner)
        if record is None:
            raise _not_found(response_id)
        return JSONResponse(record.response)

    async def delete(self, request: Any, response_id: str) -> Any:
        from fastapi.responses import JSONResponse

        ing = self.ingress
        await ing.authenticate(request)
        owner = owner_id(authorization_of(request))
        await self._settled(response_id)
        if not await asyncio.to_thread(ing.registry.delete_response, response_id, key_id=owner):
            raise _not_found(response_id)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})


def _result(expert: str, response: dict[str, Any]) -> ChatResult:
    """A native Response as the observer counts it (usage only)."""
    usage = response.get("usage") or {}
    tokens = Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0))
    return ChatResult(expert=expert, content="", usage=tokens)


def _not_found(response_id: str) -> NotFound:
    return NotFound(
        f"No response found with id '{response_id}'.", param="response_id", code="response_not_found"
    )
