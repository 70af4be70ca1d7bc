"""The HTTP entry's defences that are ours (docs/security.md says which are Ray Serve's):

- `AuthBackoff`: a client (by peer address) whose API keys keep failing is refused for a while with 429
  `too_many_auth_failures` and `retry-after`, doubling per failure past `free` (capped), so guessing keys
  costs the guesser time and costs us no PBKDF2 work; a success clears the record;
- `reject_query_keys`: keys travel only in `Authorization`; a query string carrying one is refused (400)
  without being verified, so a key pasted into a URL stops working rather than working from logs;
- `read_body`: the request body must arrive within `body_timeout_s` (a slow-body client gets 408);
- `metrics_allowed`: who may scrape `/metrics` (`COE_METRICS_ACCESS`: auto = open on loopback, admin
  key otherwise; open; admin);
- `install_cors`: CORS headers only for the origins in `COE_CORS_ORIGINS` (none by default)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from registry.records import ADMIN_SCOPE
from router.errors import BadRequest, RateLimited, RequestTimeout

#: query parameters that carry credentials in other APIs; never accepted here
QUERY_KEY_NAMES = frozenset({"api_key", "apikey", "key", "access_token", "token", "authorization", "bearer"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, kw_only=True)
class AuthBackoff:
    """Per-client failure backoff: `free` failures cost nothing, then failure n blocks the client for
    `base_s * 2**(n - free - 1)` seconds (at most `max_s`). Bounded memory: the least recent client goes."""

    free: int = 5
    base_s: float = 1.0
    max_s: float = 60.0
    max_clients: int = 10_000
    clock: Callable[[], float] = time.monotonic
    #: client -> (failures, blocked until)
    _clients: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict, init=False)

    def check(self, client: str) -> None:
        """RateLimited while `client` is blocked."""
        entry = self._clients.get(client)
        if entry is None:
            return
        wait = entry[1] - self.clock()
        if wait > 0:
            raise RateLimited(
                f"too many failed API keys from this client; retry in {wait:.0f}s",
                code="too_many_auth_failures",
                retry_after_s=max(1, int(wait + 0.999)),
            )

    def failure(self, client: str) -> None:
        failures = self._clients.pop(client, (0, 0.0))[0] + 1
        until = 0.0
        if failures > self.free:
            until = self.clock() + min(self.max_s, self.base_s * 2 ** (failures - self.free - 1))
        self._clients[client] = (failures, until)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def success(self, client: str) -> None:
        self._clients.pop(client, None)

    def failures(self, client: str) -> int:
        return self._clients.get(client, (0, 0.0))[0]


def authorization_of(request: Any, *, x_api_key: bool = False) -> str | None:
    """The request's Authorization header; with `x_api_key` (Anthropic's Messages API, whose clients send
    the key in `x-api-key`), that header's key as a Bearer credential when there is no Authorization."""
    authorization = request.headers.get("authorization")
    if authorization or not x_api_key:
        return authorization
    key = request.headers.get("x-api-key")
    return f"Bearer {key.strip()}" if key and key.strip() else None


def owner_id(authorization: str | None) -> str:
    """Who is asking, for cache isolation and stored responses: a digest of the credential (never the
    key itself; the same for every client of an open service)."""
    return hashlib.sha256((authorization or "").encode()).hexdigest()[:32]


def client_id(request: Any) -> str:
    """The peer address (X-Forwarded-For is not trusted: anyone can send it)."""
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")


def reject_query_keys(query: str) -> None:
    names = {k.lower() for k, _ in parse_qsl(query, keep_blank_values=True)}
    if names & QUERY_KEY_NAMES:
        raise BadRequest(
            "API keys are accepted only in the Authorization header (send 'Authorization: Bearer <key>'), "
            "never in the URL",
            param="query",
            code="key_in_query",
        )


async def read_body(request: Any, timeout_s: float) -> bytes:
    try:
        return bytes(await asyncio.wait_for(request.body(), timeout_s))
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout_s:g}s", code="body_timeout"
        ) from None


def metrics_policy(access: str, host: str) -> str:
    """'open' or 'admin' for COE_METRICS_ACCESS=`access` on bind address `host`."""
    if access == "auto":
        return "open" if host in LOOPBACK_HOSTS else ADMIN_SCOPE
    return access


def install_cors(app: Any, origins: str) -> None:
    """`origins`: COE_CORS_ORIGINS, comma-separated (empty: no CORS headers at all)."""
    allowed = [o.strip() for o in origins.split(",") if o.strip()]
    if not allowed:
        return
    from fastapi.middleware.cors import CORSMiddleware

    app.add_middleware(
        CORSMiddleware,
        allow_origins=allowed,
        allow_methods=["GET", "POST"],
        allow_headers=["authorization", "content-type"],
        expose_headers=["x-coe-route", "retry-after"],
    )
