"""API-key auth for the service. Keys live (hashed) in the registry; this module only asks it.

- no key exists in the registry: the service is open (a warning says so, once per state change);
- otherwise `Authorization: Bearer <key>` is required and the key must carry the scope (`query`).

Results are cached briefly (keyed by a SHA-256 of the key, never the key itself) so a burst of
requests costs one registry look-up; revoking a key takes effect within `ttl_s`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from registry.records import QUERY_SCOPE
from router.errors import Forbidden, Unauthorized

log = logging.getLogger("coe.auth")


class KeyStore(Protocol):
    def has_api_keys(self) -> bool: ...

    def verify_key(self, plaintext: str) -> Any: ...  # record with .scopes, or None


class KeyChecker:
    def __init__(
        self,
        store: KeyStore,
        *,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 4096,
    ) -> None:
        self._store = store
        self._ttl = ttl_s
        self._clock = clock
        self._max = max_entries
        self._has_keys: tuple[float, bool] | None = None
        self._cache: dict[str, tuple[float, frozenset[str] | None]] = {}
        self._warned_open = False

    def invalidate(self) -> None:
        """Forget cached answers (called when the registry revision changes)."""
        self._has_keys = None
        self._cache.clear()

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def _note(self, has: bool) -> None:
        self._has_keys = (self._clock(), has)
        if not has and not self._warned_open:
            log.warning(
                "no API keys in the registry: the service is OPEN to anyone who can reach it "
                "(create one with `coe keys create` to require auth)"
            )
        self._warned_open = not has

    def prime(self) -> None:
        """Synchronous first look (at start-up), so the 'open' warning appears before any request."""
        self._note(bool(self._store.has_api_keys()))

    async def auth_required(self) -> bool:
        if self._has_keys is None or self._clock() - self._has_keys[0] > self._ttl:
            self._note(bool(await self._call(self._store.has_api_keys)))
        assert self._has_keys is not None
        return self._has_keys[1]

    async def check(self, authorization: str | None, scope: str = QUERY_SCOPE) -> None:
        """Raise Unauthorized / Forbidden, or return when the request may proceed."""
        if not await self.auth_required():
            return
        key = _bearer(authorization)
        if key is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        digest = hashlib.sha256(key.encode()).hexdigest()
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is None or now - hit[0] > self._ttl:
            record = await self._call(self._store.verify_key, key)
            scopes = frozenset(getattr(record, "scopes", ()) or ()) if record is not None else None
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[digest] = (now, scopes)
        else:
            scopes = hit[1]
        if scopes is None:
            raise Unauthorized("invalid API key", code="invalid_api_key")
        if scope not in scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope", code="insufficient_scope")


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    kind, _, value = header.strip().partition(" ")
    if kind.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
