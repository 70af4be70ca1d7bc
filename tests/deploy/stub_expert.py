"""A real HTTP expert on loopback for fault tests: OpenAI-compatible JSON and SSE answers, switched at run
time between `ok`, `slow` (waits `delay_s` first), `500`, `garbage` (malformed JSON), `flaky` (every other
request fails, alternating 500 and malformed JSON), `cut` (a stream stops after its first chunk, without
the terminating chunk). `kill()` closes the listener and every open connection, as a crashed process would."""

from __future__ import annotations

import asyncio
import contextlib
import json

from tests.experts.helpers import read_request


def _answer(content: str) -> bytes:
    return json.dumps(
        {
            "id": "stub",
            "object": "chat.completion",
            "created": 0,
            "model": "stub",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    ).encode()


def _event(obj: object) -> bytes:
    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class StubExpert:
    def __init__(self, content: str, mode: str = "ok", delay_s: float = 0.0) -> None:
        self.content = content
        self.mode = mode
        self.delay_s = delay_s
        self.hits = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> StubExpert:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()

    async def kill(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head, stream = await read_request(reader)
                self.hits += 1
                if not await self._respond(writer, head.split(b"\r\n")[0], stream):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _send(self, w: asyncio.StreamWriter, status: str, body: bytes) -> None:
        head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        w.write(head.encode() + body)

    async def _respond(self, w: asyncio.StreamWriter, request_line: bytes, stream: bool) -> bool:
        mode = self.mode
        if mode == "flaky":
            mode = ("500", "ok", "garbage", "ok")[self.hits % 4]
        if mode == "slow" or self.delay_s:
            await asyncio.sleep(self.delay_s)
        if b"/models" in request_line:
            self._send(w, "200 OK", b'{"object": "list", "data": [{"id": "stub"}]}')
        elif mode == "500":
            self._send(w, "500 Internal Server Error", b'{"error": {"message": "engine crashed"}}')
        elif mode == "garbage":
            self._send(w, "200 OK", b'{"choices": [ this is not json')
        elif stream:
            w.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            words = self.content.split(" ")
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                w.write(
                    _event({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                )
                await w.drain()
                if mode == "cut":
                    await asyncio.sleep(0.05)
                    return False  # the connection drops mid-stream
                await asyncio.sleep(0)
            w.write(_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
            w.write(_event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(words)}}))
            w.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        else:
            self._send(w, "200 OK", _answer(self.content))
        await w.drain()
        return True
