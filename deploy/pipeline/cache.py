"""The response cache (`COE_CACHE=off|exact|semantic`): a repeated deterministic question costs nothing.

Keys: the API key (its digest, never the key), the routed expert, and the request as the expert would
receive it minus `stream`, `stream_options` and `user`. `exact` needs that whole request to match;
`semantic` keeps the rest exact (system prompt, earlier turns' roles, parameters, and every number in
the user text, in order) and compares the user text by the router's embedding of it (cosine ≥
`cache_threshold`). The number guard is there because the embedding cannot tell "3 apples" from "4
apples": bench/cache.py measured 85% of GSM8K problems with every number changed within 0.95 of their
original. Only deterministic requests are
cached (temperature 0, or a fixed seed), and never with tools unless the request opts in with
`routing.cache: true`; `routing.cache: false` always skips. Entries expire after `cache_ttl_s`; the
least recently used beyond `cache_max_entries` go first.

Per replica, in memory (`MemoryCache`)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from experts.types import ChatRequest, ChatResult

MODES = ("off", "exact", "semantic")
#: request fields that do not change the answer
_IGNORED = ("stream", "stream_options", "user")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def user_numbers(messages: list[dict[str, Any]]) -> list[str]:
    """Every number in the user turns' text, in order (semantic hits must agree on them)."""
    out: list[str] = []
    for m in messages:
        if m.get("role") != "user":
            continue
        c = m.get("content")
        parts = [c] if isinstance(c, str) else [p.get("text", "") for p in c or [] if isinstance(p, dict)]
        for text in parts:
            out += _NUMBER.findall(str(text))
    return out


@dataclass(frozen=True, slots=True)
class CacheKey:
    exact: str  # digest of the whole request (key id, expert, messages, parameters)
    frame: str  # digest of everything but the user text (semantic mode compares that by embedding)


@dataclass(slots=True)
class _Entry:
    result: ChatResult
    expires: float
    vector: np.ndarray | None
    #: the embedding space of `vector` (the router version that computed it): a swapped artifact may
    #: bring its own encoder (router/tuned_encoder.py), whose vectors are not comparable with these
    space: str = ""


def _digest(obj: Any) -> str:
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()


def cache_key(key_id: str, expert: str, request: ChatRequest) -> CacheKey:
    params = {k: v for k, v in request.params.items() if k not in _IGNORED}
    messages = [dict(m) for m in request.messages]
    frame = [
        {k: v for k, v in m.items() if not (m.get("role") == "user" and k == "content")} for m in messages
    ]
    return CacheKey(
        exact=_digest([key_id, expert, messages, params]),
        frame=_digest([key_id, expert, frame, params, user_numbers(messages)]),
    )


def cacheable(params: Mapping[str, Any], opt_in: bool | None) -> bool:
    """Deterministic (temperature 0 or a seed) and no tools, unless the request says otherwise."""
    if opt_in is False:
        return False
    if opt_in is True:
        return True
    if params.get("tools") or params.get("functions"):
        return False
    return params.get("temperature") == 0 or params.get("seed") is not None


class MemoryCache:
    """LRU + TTL, exact by digest; semantic by a linear scan of the entries sharing the frame digest."""

    def __init__(
        self,
        *,
        mode: str = "exact",
        ttl_s: float = 300.0,
        max_entries: int = 10_000,
        threshold: float = 0.95,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"cache mode must be one of {', '.join(MODES)}")
        self.mode = mode
        self.ttl_s = ttl_s
        self.max_entries = max(1, max_entries)
        self.threshold = threshold
        self._clock = clock
        self._exact: OrderedDict[str, _Entry] = OrderedDict()
        self._frames: dict[str, dict[str, _Entry]] = {}  # frame digest -> exact digest -> entry
        self._frame_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._exact)

    def _drop(self, exact: str) -> None:
        self._exact.pop(exact, None)
        frame = self._frame_of.pop(exact, None)
        if frame is not None:
            group = self._frames.get(frame)
            if group is not None:
                group.pop(exact, None)
                if not group:
                    del self._frames[frame]

    def get(self, key: CacheKey, vector: np.ndarray | None, space: str = "") -> ChatResult | None:
        now = self._clock()
        entry = self._exact.get(key.exact)
        if entry is not None:
            if entry.expires <= now:
                self._drop(key.exact)
            else:
                self._exact.move_to_end(key.exact)
                return entry.result
        if self.mode != "semantic" or vector is None:
            return None
        best, best_sim = None, self.threshold
        for exact, e in list(self._frames.get(key.frame, {}).items()):
            if e.expires <= now:
                self._drop(exact)
                continue
            if e.vector is None or e.space != space:
                continue
            sim = float(np.dot(e.vector, vector))  # both L2-normalised
            if sim >= best_sim:
                best, best_sim = exact, sim
        if best is None:
            return None
        self._exact.move_to_end(best)
        return self._exact[best].result

    def put(self, key: CacheKey, vector: np.ndarray | None, result: ChatResult, space: str = "") -> None:
        self._drop(key.exact)
        v = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(-1)
        entry = _Entry(result, self._clock() + self.ttl_s, v, space)
        self._exact[key.exact] = entry
        self._frames.setdefault(key.frame, {})[key.exact] = entry
        self._frame_of[key.exact] = key.frame
        while len(self._exact) > self.max_entries:
            self._drop(next(iter(self._exact)))
