"""Session affinity: a request that continues a conversation CoE answered goes back to the expert that
answered it, so a tool loop never changes model half-way (the next expert would receive another model's
tool-call ids and arguments, and the first one's prefix cache would be lost).

The keys a request carries (`Affinity.keys` -> AffinityKeys), strongest first:

    tool_loop          the tool_call ids of the `tool` messages after the last assistant message: the
                       results of tool calls an expert returned, i.e. an open tool loop
    previous_response  the Responses API's `previous_response_id`
    session            a key the client gives: the `x-coe-session` header, else `prompt_cache_key`,
                       else `user` (the Anthropic front door passes `metadata.user_id` as `user`)

`COE_SESSION_AFFINITY` (the `mode`):

    tool_loop     (default) only an open tool loop is kept on its expert; only replies that return tool
                  calls are remembered
    conversation  every continuation: tool loop, then previous response, then session; every reply
                  of a request with a key (or with tool calls, or a response id) is remembered
    off           nothing is read or written

`lookup` says which expert and why ("tool_loop" / "previous_response" / "session"); whether that expert
is healthy and can serve the request is the pipeline's call. Keys are digests scoped by the `owner`
the pipeline passes (the caller's API key id), so neither a client's raw session key nor a tool call id
reaches the database, and two tenants never share a key (without an owner, all callers share one scope).

Storage: the registry's `session_affinity` table is the shared store, so a continuation that reaches
another ingress replica finds the expert too; rows expire after `ttl_s` and are purged at most every
`purge_every_s` by whichever replica remembers something. In front of it, a bounded LRU
(`max_entries`) saves reads: a tool call id or a response id is answered by one expert once, so what
this replica remembered holds until it expires; a session key can move to another expert (when its
expert could not serve and another answered), so a session entry, and anything read back from the
database, is trusted for `reread_s` only. Misses are not cached (another replica may write the key a
moment later). A database failure never fails a request: `lookup` gives None (the usual choice) and
`remember` drops the write, with a warning, and the database is left alone for `backoff_s` (a
blackholed server could make each try wait for its connect timeout); what this replica remembered in
memory still answers meanwhile."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from router.errors import BadRequest, CoeError

log = logging.getLogger("coe.affinity")

AffinityMode = Literal["tool_loop", "conversation", "off"]
AFFINITY_MODES: tuple[str, ...] = get_args(AffinityMode)
#: why a request went back to its expert (`coe.affinity` in the decision)
AffinityReason = Literal["tool_loop", "previous_response", "session"]


@runtime_checkable
class AffinityStore(Protocol):
    """What affinity needs from the registry (registry.Registry; tests/deploy/doubles.FakeRegistry)."""

    def remember_affinity(self, keys: Sequence[str], expert: str, ttl_s: float) -> None: ...

    def affinity_expert(self, keys: Sequence[str]) -> str | None: ...

    def purge_expired(self) -> int: ...


def _digest(kind: str, owner: str | None, value: str) -> str:
    h = hashlib.blake2b(digest_size=20)
    h.update((owner or "").encode("utf-8", "replace"))
    h.update(b"\0")
    h.update(value.encode("utf-8", "replace"))
    return f"{kind}:{h.hexdigest()}"


@dataclass(frozen=True, slots=True)
class AffinityKeys:
    """The continuation keys of one request, digested (what `lookup` reads and `remember` writes)."""

    owner: str | None = None
    tool_calls: tuple[str, ...] = ()  # one key per tool result of the open tool loop
    previous_response: str | None = None
    session: str | None = None

    @property
    def continues(self) -> bool:
        """Whether the request carries any continuation key (only then is a lookup worth a read)."""
        return bool(self.tool_calls) or self.previous_response is not None or self.session is not None

    def tool_call_key(self, call_id: str) -> str:
        return _digest("tool", self.owner, call_id)

    def response_key(self, response_id: str) -> str:
        return _digest("resp", self.owner, response_id)


def open_tool_results(messages: Any) -> list[str]:
    """The tool_call ids of the `tool` messages after the last assistant message (an open tool loop)."""
    if not isinstance(messages, list):
        return []
    last_assistant = -1
    for i, m in enumerate(messages):
        if isinstance(m, Mapping) and m.get("role") == "assistant":
            last_assistant = i
    ids: list[str] = []
    for m in messages[last_assistant + 1 :]:
        if isinstance(m, Mapping) and m.get("role") == "tool":
            call_id = m.get("tool_call_id")
            if isinstance(call_id, str) and call_id:
                ids.append(call_id)
    return list(dict.fromkeys(ids))


def reply_tool_call_ids(reply_chat: Mapping[str, Any]) -> list[str]:
    """The ids of the tool calls a Chat Completions reply returned (a completion's `message` or a
    stream chunk's `delta`, every choice)."""
    ids: list[str] = []
    choices = reply_chat.get("choices") if isinstance(reply_chat, Mapping) else None
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, Mapping):
            continue
        for part in ("message", "delta"):
            msg = choice.get(part)
            calls = msg.get("tool_calls") if isinstance(msg, Mapping) else None
            for call in calls if isinstance(calls, list) else ():
                call_id = call.get("id") if isinstance(call, Mapping) else None
                if isinstance(call_id, str) and call_id:
                    ids.append(call_id)
    return list(dict.fromkeys(ids))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


class Affinity:
    """Continuation key -> expert: the registry as the shared store, an LRU with TTL in front of it."""

    def __init__(
        self,
        registry: AffinityStore,
        mode: AffinityMode,
        ttl_s: float,
        max_entries: int,
        *,
        reread_s: float = 5.0,
        purge_every_s: float = 300.0,
        backoff_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in AFFINITY_MODES:
            raise BadRequest(
                f"unknown session affinity mode {mode!r}: choose from {', '.join(AFFINITY_MODES)}",
                param="session_affinity",
            )
        if not ttl_s > 0 or max_entries < 0:
            raise BadRequest(
                f"session affinity needs ttl_s > 0 and max_entries >= 0, got {ttl_s!r}, {max_entries!r}"
            )
        self.registry = registry
        self.mode: AffinityMode = mode
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self.reread_s = float(reread_s)
        self.purge_every_s = float(purge_every_s)
        self.backoff_s = float(backoff_s)
        self._down_until = float("-inf")
        self._clock = clock
        self._lock = threading.Lock()
        # digested key -> (expert, trusted until on `clock`), least recently used first
        self._lru: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._next_purge = clock() + purge_every_s

    # --- reading a request ---------------------------------------------------------------------------
    def keys(
        self,
        chat_body: Mapping[str, Any],
        *,
        session: str | None,
        previous_response_id: str | None,
        owner: str | None = None,
    ) -> AffinityKeys:
        """The continuation keys of a Chat Completions body (what every front door hands the pipeline);
        `session` is the `x-coe-session` header, `owner` the caller's key id (keys are scoped by it)."""
        if self.mode == "off":
            return AffinityKeys(owner=owner)
        tool_calls = tuple(_digest("tool", owner, i) for i in open_tool_results(chat_body.get("messages")))
        if self.mode == "tool_loop":  # a previous response or a session alone continues nothing here
            return AffinityKeys(owner=owner, tool_calls=tool_calls)
        session_key = (
            _text(session) or _text(chat_body.get("prompt_cache_key")) or _text(chat_body.get("user"))
        )
        prev = _text(previous_response_id)
        return AffinityKeys(
            owner=owner,
            tool_calls=tool_calls,
            previous_response=None if prev is None else _digest("resp", owner, prev),
            session=None if session_key is None else _digest("session", owner, session_key),
        )

    def lookup(self, keys: AffinityKeys, *, read: bool = True) -> tuple[str, AffinityReason] | None:
        """The expert this continuation goes back to and why, or None (the usual choice).

        It may read the database (blocking): from async code, call `lookup(keys, read=False)` first, which
        answers from memory alone and gives None as soon as a key would need a read, and only on None
        `await asyncio.to_thread(affinity.lookup, keys)`."""
        if self.mode == "off" or not keys.continues:
            return None
        groups: list[tuple[AffinityReason, Sequence[str]]] = [("tool_loop", keys.tool_calls)]
        if self.mode == "conversation":
            if keys.previous_response is not None:
                groups.append(("previous_response", (keys.previous_response,)))
            if keys.session is not None:
                groups.append(("session", (keys.session,)))
        for why, group in groups:
            if not group:
                continue
            expert = self._cached(group)
            if expert is None:
                if not read:
                    return None  # a stronger key than any cached one may be in the database
                if self._clock() < self._down_until:
                    return None
                try:
                    expert = self._read(group)
                except CoeError as exc:  # the database is down: no point asking for the weaker keys
                    self._failed("not read", exc)
                    return None
            if expert is not None:
                return expert, why
        return None

    # --- remembering a reply -------------------------------------------------------------------------
    def remember(
        self,
        keys: AffinityKeys,
        expert: str,
        reply_chat: Mapping[str, Any],
        *,
        response_id: str | None = None,
    ) -> int:
        """Remember who answered: the tool call ids `reply_chat` returned (a Chat Completions response, or
        a chunk carrying them), and in `conversation` mode also the session key and `response_id` (the
        Responses API id the client got, which a later `previous_response_id` names). Returns how many
        keys were written (0: nothing to remember in this mode). It writes to the database (blocking):
        call it off the event loop (`asyncio.to_thread`), after the reply went out."""
        if self.mode == "off":
            return 0
        immutable = [keys.tool_call_key(i) for i in reply_tool_call_ids(reply_chat)]
        mutable: list[str] = []
        if self.mode == "conversation":
            if response_id:
                immutable.append(keys.response_key(response_id))
            if keys.session is not None:
                mutable.append(keys.session)
        written = immutable + mutable
        if not written:
            return 0
        now = self._clock()
        with self._lock:
            for k in immutable:
                self._put(k, expert, now + self.ttl_s)
            for k in mutable:
                self._put(k, expert, now + min(self.ttl_s, self.reread_s))
            purge = now >= self._next_purge
            if purge:
                self._next_purge = now + self.purge_every_s
        if now < self._down_until:
            return len(written)
        try:
            self.registry.remember_affinity(written, expert, self.ttl_s)
            if purge:
                self.registry.purge_expired()
        except CoeError as exc:
            self._failed("not stored", exc)
        return len(written)

    def _failed(self, what: str, exc: CoeError) -> None:
        """The registry failed: leave it alone for `backoff_s` (each try could wait for a timeout)."""
        self._down_until = self._clock() + self.backoff_s
        log.warning(
            "session affinity %s (the registry failed; retried in %.0f s): %s", what, self.backoff_s, exc
        )

    # --- the LRU -------------------------------------------------------------------------------------
    def _put(self, key: str, expert: str, until: float) -> None:
        if self.max_entries == 0:
            return
        self._lru[key] = (expert, until)
        self._lru.move_to_end(key)
        while len(self._lru) > self.max_entries:
            self._lru.popitem(last=False)

    def _cached(self, group: Sequence[str]) -> str | None:
        now = self._clock()
        with self._lock:
            for key in group:
                entry = self._lru.get(key)
                if entry is None:
                    continue
                if entry[1] <= now:
                    del self._lru[key]
                    continue
                self._lru.move_to_end(key)
                return entry[0]
        return None

    def _read(self, group: Sequence[str]) -> str | None:
        expert = self.registry.affinity_expert(list(group))
        if expert is not None:
            until = self._clock() + min(self.ttl_s, self.reread_s)
            with self._lock:
                for key in group:
                    self._put(key, expert, until)
        return expert

    def __len__(self) -> int:
        return len(self._lru)
