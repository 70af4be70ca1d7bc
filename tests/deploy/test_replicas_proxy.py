"""Two ingress replicas behind Serve's own HTTP proxy (`COE_SERVE_INGRESS=proxy`, the other front door;
tests/deploy/test_replicas.py runs the default, HAProxy): the proxy answers on COE_PORT, requests by
name and by `auto` are answered by both replicas, and SIGTERM under load loses no accepted request.
The drain test stops the service, so it runs last."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.deploy.replicas_stack import STUB, Stack, front_door, start_stack
from tests.deploy.test_replicas import (
    _load,
    _status,
    _wait_for_both_replicas,
    ask,
    port_of,
    sigterm_under_load_loses_nothing,
)

pytestmark = [pytest.mark.serve, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("coe-replicas-proxy"), COE_SERVE_INGRESS="proxy")
    try:
        _wait_for_both_replicas(s)
        yield s
    finally:
        s.stop()


def test_the_front_door_is_serves_proxy_and_both_replicas_answer(stack: Stack) -> None:
    assert front_door(port_of(stack)) != "haproxy"  # Serve's proxy: a Ray actor process
    for model in (STUB, "auto"):
        answers = asyncio.run(_load(stack, 48, 16, ask("What is 3+4?", model=model), stack.keys.query))
        assert [r.status_code for r in answers] == [200] * 48, [
            r.text for r in answers if r.status_code != 200
        ]
        assert all(r.json()["coe"]["categories"] for r in answers) == (model == "auto")
    time.sleep(3 * 0.5)
    by_replica = _status(stack)["scope"]["by_replica"]
    assert len(by_replica) == stack.replicas and all(r["chat_requests"] > 0 for r in by_replica.values())


def test_sigterm_with_two_replicas_under_load_loses_no_accepted_request(stack: Stack) -> None:
    sigterm_under_load_loses_nothing(stack)
