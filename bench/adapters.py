"""What the Responses and Messages front doors add per request in CPU: the protocol adapters of deploy/api
(translation to a Chat Completions body, the chat parse every request gets, translation of the answer
back; and the stream encoders per chunk) against the chat endpoint's own parse of the same request — the
baseline, measured interleaved in the same run. No network, no expert: the adapters alone, so the figure
is the added work, not the service's latency (the end-to-end comparison against /v1/chat/completions
belongs to the service benchmark).

Usage: python bench/adapters.py [--rounds 30] [--calls 200]; writes bench/results/adapters.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine, offline_env, table, write  # noqa: E402

QUESTION = "Explain the difference between a process and a thread in two sentences."
ANSWER = "A process has its own address space; threads of one process share theirs. " * 3
TOOL = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def cases() -> dict[str, Callable[[], Any]]:
    from deploy.api import anthropic_messages as am
    from deploy.api import openai_responses as orr
    from deploy.api.protocol import parse_chat

    chat = {
        "model": "auto",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        "max_completion_tokens": 200,
        "temperature": 0.2,
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": TOOL}}],
    }
    responses = {
        "model": "auto", "instructions": "Be brief.", "input": QUESTION, "max_output_tokens": 200,
        "temperature": 0.2,
        "tools": [{"type": "function", "name": "weather", "parameters": TOOL, "strict": True}],
    }  # fmt: skip
    messages = {
        "model": "auto", "system": "Be brief.", "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 200, "temperature": 0.2, "tools": [{"name": "weather", "input_schema": TOOL}],
    }  # fmt: skip
    reply = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": ANSWER}}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 45, "total_tokens": 85},
    }  # fmt: skip
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}  # fmt: skip

    def responses_request() -> None:
        parse_chat(orr.to_chat(responses))
        orr.from_chat(reply, response_id="resp_1", body=responses, created_at=1)

    def messages_request() -> None:
        parse_chat(am.to_chat(messages))
        am.from_chat(reply, message_id="msg_1", model="auto")

    def responses_stream() -> None:  # 100 chunks, every event encoded
        s = orr.ResponsesStream("resp_1", responses, 1)
        for e in s.start() + [e for _ in range(100) for e in s.feed(chunk)] + s.finish():
            orr.sse(e)

    def messages_stream() -> None:
        s = am.MessagesStream("msg_1", "auto")
        for name, data in s.start() + [e for _ in range(100) for e in s.feed(chunk)] + s.finish():
            am.sse(name, data)

    def chat_stream() -> None:  # the chat endpoint's own per-chunk work: one JSON encoding per chunk
        import json

        for _ in range(100):
            f"data: {json.dumps(chunk)}\n\n".encode()

    return {
        "chat parse (baseline)": lambda: parse_chat(chat),
        "responses request + answer": responses_request,
        "messages request + answer": messages_request,
        "chat stream, 100 chunks (baseline)": chat_stream,
        "responses stream, 100 chunks": responses_stream,
        "messages stream, 100 chunks": messages_stream,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    offline_env()
    info = machine()
    fns = cases()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm up
        fn()
    for _ in range(args.rounds):  # interleaved: every case in every round, so load drifts hit all alike
        for name, fn in fns.items():
            calls = args.calls if "stream" not in name else max(1, args.calls // 20)
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - t0) / calls * 1e6)
    median = {name: statistics.median(v) for name, v in samples.items()}
    base = {
        "request": median["chat parse (baseline)"],
        "stream": median["chat stream, 100 chunks (baseline)"],
    }
    rows = []
    for name, us in median.items():
        ref = base["stream" if "stream" in name else "request"]
        rows.append([name, round(us, 1), round(us / ref, 3), round(us - ref, 1)])
    info["loadavg_at_end"] = list(os.getloadavg())
    print(f"load average at start {info['loadavg_at_start']}, at end {info['loadavg_at_end']}")
    print(table(["case", "median µs / call", "ratio to baseline", "added µs"], rows))
    path = write("adapters", {"machine": info, "rounds": args.rounds, "calls": args.calls, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
