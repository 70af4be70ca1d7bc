"""The ingress's DeploymentHandle adapters retry a call whose replica was lost (Ray's actor-death
errors), and only such calls: a request error is returned at once, and a stream that already
produced output is never replayed. Ray's real exception classes, a fake handle."""

from __future__ import annotations

from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from deploy.serve.handles import HandleGateway, HandleRouter, replica_lost
from experts.types import ChatChunk, ChatRequest
from router.errors import BadRequest
from router.types import RouteDecision, RoutingOptions


class _Response:
    def __init__(self, outcome: Any) -> None:
        self._outcome = outcome

    def __await__(self) -> Any:
        async def run() -> Any:
            if isinstance(self._outcome, BaseException):
                raise self._outcome
            return self._outcome

        return run().__await__()


class _Method:
    def __init__(self, outcomes: list[Any]) -> None:
        self.outcomes = outcomes
        self.calls = 0

    def remote(self, *args: Any) -> _Response:
        self.calls += 1
        return _Response(self.outcomes.pop(0))


class _Stream:
    """What `handle.options(stream=True).stream.remote()` gives: an async iterator of chunks that may
    fail after `items`."""

    def __init__(self, items: list[Any], error: BaseException | None) -> None:
        self.items, self.error = items, error

    def __aiter__(self) -> Any:
        return self._gen()

    async def _gen(self) -> Any:
        for item in self.items:
            yield item
        if self.error is not None:
            raise self.error


class FakeHandle:
    def __init__(self, **methods: list[Any]) -> None:
        for name, outcomes in methods.items():
            setattr(self, name, _Method(outcomes))
        self.streams: list[_Stream] = []

    def options(self, stream: bool = False) -> Any:
        handle = self

        class _Opts:
            class stream:  # noqa: N801 - mirrors handle.options(...).stream.remote
                @staticmethod
                def remote(*_args: Any) -> _Stream:
                    return handle.streams.pop(0)

        return _Opts()


DECISION = RouteDecision(categories=(("math", 0.9),), experts=(), policy="category")


def _wrapped(cause: BaseException) -> BaseException:
    """A replica's exception as Ray delivers it: RayTaskError whose `cause` is the real one."""
    return RayTaskError("route", "traceback", cause).as_instanceof_cause()


def test_replica_lost_recognises_ray_actor_errors_only() -> None:
    assert replica_lost(ActorDiedError())
    assert replica_lost(ActorUnavailableError("node gone", b"0" * 16))
    assert replica_lost(_wrapped(ActorDiedError()))
    assert not replica_lost(BadRequest("bad"))
    assert not replica_lost(_wrapped(ValueError("boom")))
    assert not replica_lost(TimeoutError())


async def test_route_is_retried_on_a_lost_replica_and_counted() -> None:
    handle = FakeHandle(route=[ActorDiedError(), ActorUnavailableError("x", b"0" * 16), DECISION])
    router = HandleRouter(handle, retries=2, backoff_s=0)
    seen: list[str] = []
    router.on_retry = seen.append
    assert await router.route("2+2", RoutingOptions(policy="category")) == DECISION
    assert handle.route.calls == 3
    assert seen == ["router", "router"]


async def test_retries_are_bounded() -> None:
    handle = FakeHandle(route=[ActorDiedError(), ActorDiedError(), ActorDiedError(), DECISION])
    router = HandleRouter(handle, retries=2, backoff_s=0)
    with pytest.raises(ActorDiedError):
        await router.route("2+2", RoutingOptions(policy="category"))
    assert handle.route.calls == 3


async def test_request_errors_are_not_retried() -> None:
    handle = FakeHandle(complete=[_wrapped(BadRequest("max_tokens must be positive")), "never"])
    gateway = HandleGateway(handle, retries=2, backoff_s=0)
    with pytest.raises(BadRequest) as info:
        await gateway.complete(DECISION, ChatRequest(messages=({"role": "user", "content": "hi"},)))
    assert info.value.message == "max_tokens must be positive"  # what the error JSON carries
    assert handle.complete.calls == 1


def _chunk(text: str) -> ChatChunk:
    return ChatChunk(expert="e", delta=text)


async def test_stream_is_retried_before_its_first_chunk_only() -> None:
    request = ChatRequest(messages=({"role": "user", "content": "hi"},))
    handle = FakeHandle()
    handle.streams = [_Stream([], ActorDiedError()), _Stream([_chunk("a"), _chunk("b")], None)]
    gateway = HandleGateway(handle, retries=2, backoff_s=0)
    assert [c.delta async for c in gateway.stream(DECISION, request)] == ["a", "b"]

    handle.streams = [_Stream([_chunk("a")], ActorDiedError()), _Stream([_chunk("again")], None)]
    got: list[str] = []
    with pytest.raises(ActorDiedError):
        async for c in gateway.stream(DECISION, request):
            got.append(c.delta)
    assert got == ["a"]  # no replay after output reached the client
    assert len(handle.streams) == 1
