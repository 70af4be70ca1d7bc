"""The typed seams of deploy/: what the ingress needs from the router and the gateway (a plain class
in process, a DeploymentHandle adapter in the split topology, a double in tests), and what the
service classes need from the registry. `registry.Registry` satisfies both registry protocols; the
test doubles (tests/deploy/fakes.py) do too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from experts.types import ChatChunk, ChatRequest, ChatResult
from router.types import RegistrySnapshot, RouteDecision, RoutingOptions


@runtime_checkable
class RouterClient(Protocol):
    async def route(self, text: str, options: RoutingOptions) -> RouteDecision: ...

    async def route_embedded(self, text: str, options: RoutingOptions) -> tuple[RouteDecision, Any]: ...

    async def status(self) -> dict[str, Any]: ...


@runtime_checkable
class GatewayClient(Protocol):
    async def complete(self, decision: RouteDecision, request: ChatRequest) -> ChatResult: ...

    def stream(self, decision: RouteDecision, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...

    async def status(self) -> dict[str, Any]: ...


@runtime_checkable
class RegistryReader(Protocol):
    """What the router service and the gateway read: the revision to poll, the snapshot, a setting."""

    def revision(self) -> int: ...

    def snapshot(self) -> RegistrySnapshot: ...

    def get_setting(self, key: str, default: Any = None) -> Any: ...


@runtime_checkable
class ServiceRegistry(RegistryReader, Protocol):
    """What the ingress uses besides: API keys, key limits and usage, the decision log and feedback,
    transactions for the admin API (deploy/ops/admin.py calls the registry's repository functions), stored
    responses and session affinity."""

    def set_setting(self, key: str, value: Any) -> int: ...

    def has_api_keys(self) -> bool: ...

    def verify_key(self, plaintext: str) -> Any: ...

    def key_limits(self) -> dict[str, Any]: ...

    def current_usage(self, now: datetime | None = None) -> dict[str, Any]: ...

    def add_usage(self, deltas: Iterable[Any]) -> int: ...

    def write_decisions(self, records: Iterable[Any]) -> int: ...

    def prune_decisions(self, *, retention_days: float | None, max_rows: int | None) -> int: ...

    def add_feedback(
        self, *, decision_id: str, score: Any, comment: str = "", key_id: str | None = None
    ) -> Any: ...

    def session(self, *, write: bool = True) -> AbstractContextManager[Any]: ...

    # stored responses (`store: true`, previous_response_id, GET/DELETE) and session affinity
    def put_response(
        self,
        *,
        id: str,
        key_id: str | None,
        expert: str,
        model: str,
        input_items: Sequence[dict[str, Any]],
        response: dict[str, Any],
        previous_response_id: str | None = None,
        ttl_s: float | None = None,
    ) -> Any: ...

    def get_response(self, id: str, *, key_id: str | None) -> Any: ...

    def delete_response(self, id: str, *, key_id: str | None) -> bool: ...

    def response_history(self, id: str, *, key_id: str | None) -> list[dict[str, Any]]: ...

    def purge_expired(self, now: datetime | None = None) -> int: ...

    def remember_affinity(self, keys: Sequence[str], expert: str, ttl_s: float) -> None: ...

    def affinity_expert(self, keys: Sequence[str]) -> str | None: ...
