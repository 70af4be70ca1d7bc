"""Fault tests over real loopback sockets: an expert that hangs, refuses, answers 500, answers garbage, or
dies mid-stream. The pool fails over to the real local expert or ends with a clean typed error; breakers
open and recover (on a fake clock)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from experts.local_model import persona_expert_specs
from experts.net import free_port
from experts.pool import ExpertPool
from router.errors import ExpertBadResponse, ExpertConnectionError, ExpertHTTPError, ExpertTimeout
from router.types import ExpertInfo, RegistrySnapshot
from tests.experts.helpers import FakeClock, decision, no_sleep, read_request, request

pytestmark = pytest.mark.slow

OK_BODY = json.dumps(
    {
        "choices": [{"message": {"role": "assistant", "content": "fixed"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
).encode()


class FaultyExpert:
    """A raw asyncio HTTP server whose behaviour is switched by `mode`."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.hits = 0

    async def __aenter__(self) -> FaultyExpert:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, stream = await read_request(reader)
                self.hits += 1
                if not await self._respond(writer, head, stream):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _respond(self, w: asyncio.StreamWriter, head: bytes, stream: bool) -> bool:
        def send(status: str, body: bytes, ctype: bytes = b"application/json") -> None:
            w.write(
                b"HTTP/1.1 "
                + status.encode()
                + b"\r\ncontent-type: "
                + ctype
                + b"\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )

        if self.mode == "sleep":
            await asyncio.sleep(30)
            return False
        if self.mode == "500":
            send("500 Internal Server Error", b'{"error": {"message": "engine crashed"}}')
        elif self.mode == "garbage":
            send("200 OK", b"\x00\x01 this is not json")
        elif self.mode == "not-http":
            w.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            await w.drain()
            return False
        elif self.mode == "die-mid-stream" and stream:
            w.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            ev = b'data: {"choices": [{"index": 0, "delta": {"content": "half"}, "finish_reason": null}]}\n\n'
            w.write(f"{len(ev):x}\r\n".encode() + ev + b"\r\n")
            await w.drain()
            await asyncio.sleep(0.05)
            return False  # connection dropped without the terminating chunk
        else:  # "ok"
            if b"/models" in head.split(b"\r\n")[0]:
                send("200 OK", b'{"data": [{"id": "m"}]}')
            else:
                send("200 OK", OK_BODY)
        await w.drain()
        return True


def expert(name: str, base_url: str, **kw) -> ExpertInfo:
    return ExpertInfo(
        name=name, base_url=base_url, model="smollm2-general", timeout_s=kw.pop("timeout_s", 0.5), **kw
    )


@pytest.mark.parametrize(
    ("mode", "err"),
    [
        ("sleep", ExpertTimeout),
        ("refuse", ExpertConnectionError),
        ("500", ExpertHTTPError),
        ("garbage", ExpertBadResponse),
        ("not-http", ExpertConnectionError),
    ],
)
async def test_each_fault_fails_over_to_the_real_expert(local_server, mode, err):
    async with FaultyExpert(mode) as bad:
        url = f"http://127.0.0.1:{free_port()}/v1" if mode == "refuse" else bad.base_url
        local = persona_expert_specs(local_server.base_url)[0]
        snap = RegistrySnapshot(
            revision=1, experts={"bad": expert("bad", url), local.name: local}, category_experts={}
        )
        async with ExpertPool(snap, retries=0, health_interval_s=0, sleep=no_sleep) as pool:
            res = await pool.complete(
                decision("bad", alternates=(local.name,)), request("Hi", max_tokens=3, temperature=0)
            )
            assert res.expert == local.name
            assert res.attempts[0]["expert"] == "bad" and res.attempts[0]["error"] == err.__name__
            # alone, the same fault is a clean typed error
            with pytest.raises(err):
                await pool.complete(decision("bad"), request("Hi"))


async def test_mid_stream_death_ends_stream_with_typed_error_and_before_first_chunk_fails_over(local_server):
    async with FaultyExpert("die-mid-stream") as dying, FaultyExpert("500") as broken:
        local = persona_expert_specs(local_server.base_url)[0]
        snap = RegistrySnapshot(
            revision=1,
            experts={
                "dying": expert("dying", dying.base_url),
                "broken": expert("broken", broken.base_url),
                local.name: local,
            },
            category_experts={},
        )
        async with ExpertPool(snap, retries=0, health_interval_s=0, sleep=no_sleep) as pool:
            got = []
            with pytest.raises(ExpertConnectionError):
                async for c in pool.stream(decision("dying", alternates=(local.name,)), request("Hi")):
                    got.append(c.delta)
            assert got == ["half"]
            chunks = [
                c
                async for c in pool.stream(
                    decision("broken", alternates=(local.name,)), request("Hi", max_tokens=3, temperature=0)
                )
            ]
            assert {c.expert for c in chunks} == {local.name} and chunks[-1].usage is not None


async def test_breaker_opens_on_real_faults_and_recovers():
    clock = FakeClock()
    async with FaultyExpert("500") as flaky:
        snap = RegistrySnapshot(
            revision=1, experts={"flaky": expert("flaky", flaky.base_url)}, category_experts={}
        )
        async with ExpertPool(
            snap,
            retries=0,
            breaker_failures=2,
            breaker_cooldown_s=15,
            health_interval_s=0,
            clock=clock,
            sleep=no_sleep,
        ) as pool:
            for _ in range(2):
                with pytest.raises(ExpertHTTPError):
                    await pool.complete(decision("flaky"), request())
            assert pool.breaker_state("flaky") == "open" and not pool.load()["flaky"].healthy
            hits = flaky.hits
            with pytest.raises(Exception) as ei:
                await pool.complete(decision("flaky"), request())
            assert type(ei.value).__name__ == "NoHealthyExpert" and flaky.hits == hits
            flaky.mode = "ok"
            clock.advance(15)
            assert await pool.check_health() == {"flaky": True}  # the health probe closes it
            assert pool.breaker_state("flaky") == "closed"
            assert (await pool.complete(decision("flaky"), request())).content == "fixed"
