"""The pipeline's side of session affinity (deploy/pipeline/affinity.py holds the keys and the store): a
continuation goes back to the expert that answered it while that expert can serve the request, and every
answer is remembered under the keys a later continuation will carry.

`coe.affinity` in the trace says what happened: `{"expert", "why", "applied"}` (why: `tool_loop`,
`previous_response` or `session`), with `reason` when the expert was not used (removed or disabled,
lacking a capability the request needs, too small a context, the store unreachable). A pinned expert that
turns out unhealthy is failed over by the expert pool to the routed choice, which becomes the decision's
alternates (the trace's `answered_by` then names who answered)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from deploy.api.replies import Item
from deploy.pipeline.affinity import Affinity, AffinityKeys, reply_tool_call_ids
from router.types import ExpertChoice, RegistrySnapshot, RouteDecision

log = logging.getLogger("coe.ingress")


class Staying:
    """Affinity for one ingress: lookups before the decision is final, and remembering after the answer."""

    def __init__(self, affinity: Affinity) -> None:
        self.affinity = affinity

    def keys(
        self,
        chat_body: Mapping[str, Any],
        *,
        session: str | None,
        previous_response_id: str | None,
        owner: str,
    ) -> AffinityKeys:
        return self.affinity.keys(
            chat_body, session=session, previous_response_id=previous_response_id, owner=owner
        )

    async def stay(
        self,
        decision: RouteDecision,
        keys: AffinityKeys,
        snapshot: RegistrySnapshot,
        needs: frozenset[str],
        context_tokens: int,
    ) -> tuple[RouteDecision, dict[str, Any] | None]:
        """The decision pinned to the expert that answered this conversation, while it can serve the
        request (enabled, capable, with the context), and what `coe.affinity` says about it."""
        if not keys.continues:
            return decision, None
        found = self.affinity.lookup(keys, read=False)  # memory first: no thread hop on a hit
        if found is None:
            try:
                found = await asyncio.to_thread(self.affinity.lookup, keys)
            except Exception as exc:  # never fail a request for its affinity
                log.warning("affinity lookup failed: %s", type(exc).__name__)
                return decision, None
        if found is None:
            return decision, None
        expert, why = found
        info = snapshot.experts.get(expert)
        note: dict[str, Any] = {"expert": expert, "why": why, "applied": False}
        if info is None or not info.enabled:
            note["reason"] = "expert removed or disabled"
        elif not info.serves(needs):
            note["reason"] = f"expert lacks {', '.join(sorted(set(needs) - set(info.capabilities)))}"
        elif context_tokens > info.max_context:
            note["reason"] = "request exceeds the expert's context"
        else:
            note["applied"] = True
            rest = tuple(n for n in (*decision.expert_names, *decision.alternates) if n != expert)
            choice = ExpertChoice(expert, 1.0, reason=f"affinity: {why}")
            decision = dataclasses.replace(decision, experts=(choice,), alternates=rest, aggregate=None)
        return decision, note

    def worth_remembering(
        self, keys: AffinityKeys, reply: Mapping[str, Any], response_id: str | None
    ) -> bool:
        """Whether `remember` would write anything (saves a thread hop on every plain answer)."""
        if self.affinity.mode == "conversation" and (keys.session is not None or response_id):
            return True
        return bool(reply_tool_call_ids(reply))

    async def remember(
        self, keys: AffinityKeys, expert: str, reply: Mapping[str, Any], response_id: str | None = None
    ) -> None:
        """Note who answered under the continuation keys of the request and its reply (the shared store,
        so another ingress replica finds it); done before the answer is returned, so a continuation that
        follows at once finds it. A store failure costs only the affinity."""
        if not self.worth_remembering(keys, reply, response_id):
            return
        try:
            await asyncio.to_thread(self.affinity.remember, keys, expert, reply, response_id=response_id)
        except Exception as exc:
            log.warning("affinity remember failed: %s", type(exc).__name__)

    def remembering(
        self, items: AsyncIterator[Item], keys: AffinityKeys, response_id: str | None
    ) -> AsyncIterator[Item]:
        """A stream that, once complete, remembers its expert and the tool calls it returned (before its
        last event goes out: the client may continue the moment it sees the end)."""

        async def remembered() -> AsyncIterator[Item]:
            expert: str | None = None
            calls: list[dict[str, Any]] = []
            async for item in items:
                if not isinstance(item, dict):
                    yield item
                    return  # a failed stream is not remembered
                expert = expert or item.get("model")
                for ch in item.get("choices") or ():
                    for call in (ch.get("delta") or {}).get("tool_calls") or ():
                        if isinstance(call, dict) and call.get("id"):
                            calls.append({"id": call["id"], "type": "function"})
                yield item
            if expert:
                message = {"role": "assistant", "tool_calls": calls}
                await self.remember(
                    keys, str(expert), {"choices": [{"index": 0, "message": message}]}, response_id
                )

        return remembered()
