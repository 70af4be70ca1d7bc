"""The local experts on vLLM's CPU engine: `vllm serve` over the converted SmolLM2-135M folder, in its own
venv (`make vllm` builds `.venv-vllm`; `COE_VLLM_PYTHON` points elsewhere), under every persona name.

vLLM serves one model under several names (`--served-model-name a b c`) but has no per-name system prompt
or sampling defaults: on this engine the personas are aliases of the bare model (its chat template's
default system prompt), while the transformers server (`experts.local_server`) applies each persona's.
Tool calling is on (hermes parser) with `--tool-strict-level parameter`, so a named or `required`
`tool_choice` is decoded against the tool's JSON schema even by a 135M model.

The handle is the local server's (`LocalServerHandle`: `base_url`, `alive()`, `stop()`); stopping ends
the whole process group (the API server and its EngineCore process)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from experts.local_model import PERSONAS, ensure_converted
from experts.local_server import LocalServerHandle, default_data_dir
from experts.net import free_port
from router.errors import ExpertConnectionError

VLLM_PYTHON_ENV = "COE_VLLM_PYTHON"
VLLM_ARGS_ENV = "COE_VLLM_ARGS"  # extra server flags, e.g. "--enable-log-requests --dtype float32"
VLLM_VENV = ".venv-vllm"
#: GiB of KV cache (vLLM's CPU default is larger than a shared 2-core machine wants)
DEFAULT_KV_CACHE_GIB = "1"
DEFAULT_MAX_MODEL_LEN = 2048


def default_vllm_python() -> Path:
    """COE_VLLM_PYTHON, else `<repo>/.venv-vllm/bin/python` (what `make vllm` installs)."""
    env = os.environ.get(VLLM_PYTHON_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / VLLM_VENV / "bin" / "python"


def vllm_missing(python: str | os.PathLike[str] | None = None) -> str | None:
    """Why vLLM cannot run from `python` (None when it can): the venv is absent or vllm does not import."""
    py = Path(python) if python is not None else default_vllm_python()
    if not py.exists():
        return f"no vLLM venv at {py} (run `make vllm`, or set {VLLM_PYTHON_ENV})"
    r = subprocess.run(
        [str(py), "-c", "import vllm.entrypoints.openai.api_server"], capture_output=True, text=True
    )
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        return f"vllm does not import with {py}: {tail}"
    return None


# `python -m vllm.entrypoints.openai.api_server ARGS`, plus what `experts.local_server` does for itself: when
# the process that started it (COE_PARENT_PID) is gone, e.g. a `coe up` killed hard, the server's whole
# process group gets SIGTERM, so no orphaned engine keeps its port and memory.
_WATCH_PARENT = """
import os, runpy, signal, sys, threading, time
parent = os.environ.get("COE_PARENT_PID", "")
def watch():
    while os.getppid() == int(parent):
        time.sleep(1.0)
    os.killpg(0, signal.SIGTERM)
if parent.isdigit():
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
sys.argv[0] = "vllm.entrypoints.openai.api_server"
runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)
"""


class VllmServerHandle(LocalServerHandle):
    """A running vLLM OpenAI server (started in its own process session)."""

    label, poll_s, log_tail = "vLLM", 0.5, 2000

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)  # the server's own group: API server + EngineCore
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def vllm_command(
    python: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    *,
    host: str,
    port: int,
    served: Sequence[str],
    max_model_len: int = DEFAULT_MAX_MODEL_LEN,
    extra_args: Sequence[str] = (),
) -> list[str]:
    return [
        str(python),
        "-c",
        _WATCH_PARENT,
        "--model",
        str(model_dir),
        "--served-model-name",
        *served,
        "--enforce-eager",  # no torch.compile: start-up in seconds on CPU
        "--max-model-len",
        str(max_model_len),
        "--host",
        host,
        "--port",
        str(port),
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--tool-strict-level",
        "parameter",
        "--disable-uvicorn-access-log",
        *extra_args,
    ]


def start_vllm_server(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    model_path: str = "default",
    data_dir: str | os.PathLike[str] | None = None,
    served: Sequence[str] | None = None,
    max_model_len: int = DEFAULT_MAX_MODEL_LEN,
    extra_args: Sequence[str] = (),
    python: str | os.PathLike[str] | None = None,
    timeout: float = 600.0,
    log_path: str | os.PathLike[str] | None = None,
) -> VllmServerHandle:
    """Start vLLM on the converted SmolLM2 folder (or `model_path`), serving `served` (default: every
    persona name, the bare model's first), and wait until GET /health answers. `port=0` picks a free
    port; the log goes to `<data_dir>/vllm-expert-<port>.log`; COE_VLLM_ARGS adds server flags.
    Raises ExpertConnectionError (with the log's tail) when vLLM is missing or does not start."""
    py = Path(python) if python is not None else default_vllm_python()
    missing = vllm_missing(py)
    if missing:
        raise ExpertConnectionError(f"cannot start vLLM: {missing}", expert="local")
    ddir = Path(data_dir) if data_dir is not None else default_data_dir()
    ddir.mkdir(parents=True, exist_ok=True)
    model_dir = (ensure_converted(ddir) if model_path == "default" else Path(model_path)).resolve()
    names = list(served) if served else _persona_names()
    port = port or free_port(host)
    logp = Path(log_path) if log_path is not None else ddir / f"vllm-expert-{port}.log"
    extra = [*extra_args, *shlex.split(os.environ.get(VLLM_ARGS_ENV, ""))]
    cmd = vllm_command(
        py, model_dir, host=host, port=port, served=names, max_model_len=max_model_len, extra_args=extra
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_NO_USAGE_STATS": "1",
        "COE_PARENT_PID": str(os.getpid()),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", DEFAULT_KV_CACHE_GIB),
    }
    env.pop("PYTHONPATH", None)  # the project's .venv paths must not leak into vLLM's interpreter
    return VllmServerHandle.launch(cmd, env, host, port, logp).ready(timeout)


def _persona_names() -> list[str]:
    from experts.local_model import DEFAULT_SERVED_MODEL

    return [DEFAULT_SERVED_MODEL, *(n for n in PERSONAS if n != DEFAULT_SERVED_MODEL)]
