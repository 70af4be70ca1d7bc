"""`coe deploy render`: the registry snapshot -> one Ray Serve config file (`serve deploy` format).

The file holds:
- the CoE Router app (`import_path: deploy.ops.render:app_builder`): ingress, router and gateway on CPU,
  autoscaling; settings travel as `args` (never the database URL or API keys: those come from the
  cluster's environment, e.g. a Kubernetes Secret, see docs/deploy.md);
- one `ray.serve.llm:build_openai_app` app per enabled expert tagged `vllm` (a GPU expert served by
  vLLM inside the same Ray cluster), at route prefix `/experts/<name>`; the expert's registry base_url
  should then be `http://127.0.0.1:8000/experts/<name>/v1` (every node runs a Serve HTTP proxy).
Experts without the tag are external servers reached by their URL and are not part of the file.

Import-light: ray (schema validation) loads inside `validate_config` only."""

from __future__ import annotations

from typing import Any

import yaml

from deploy.serve.app import APP_NAME, actor_options, deployment_specs, graceful, scaling
from deploy.serve.env import DEFAULT_INGRESS, serve_env
from deploy.settings import Settings
from router.types import ExpertInfo, RegistrySnapshot

VLLM_TAG = "vllm"
EXPERT_ROUTE_PREFIX = "/experts"
LLM_IMPORT_PATH = "ray.serve.llm:build_openai_app"
COE_IMPORT_PATH = "deploy.ops.render:app_builder"
RAY_LLM_IMAGE = "rayproject/ray-llm"

# Settings copied into the CoE app's `args` (service shape; no secrets, no machine-local paths).
_ARG_FIELDS = (
    "registry_poll_s",
    "embedder_model",
    "torch_threads",
    "default_policy",
    "confidence_threshold",
    "load_bias_gamma",
    "router_replicas",
    "router_cpus",
    "gateway_replicas",
    "gateway_cpus",
    "ingress_replicas",
    "ingress_cpus",
    "autoscale",
    "autoscale_max_replicas",
    "batch_max_size",
    "batch_wait_s",
    "max_prompt_chars",
    "max_body_bytes",
    "topology",
    "embedder_backend",
    "cache",
    "cache_ttl_s",
    "cache_max_entries",
    "cache_threshold",
    "request_timeout_s",
    "health_interval_s",
    "retries",
    "breaker_failures",
    "breaker_cooldown_s",
    "aggregate_deadline_s",
    "router_resources",
    "gateway_resources",
    "ingress_resources",
    "handle_retries",
)


def app_builder(args: dict[str, Any]) -> Any:
    """Ray Serve application builder for the CoE app: `args` are Settings fields (overriding COE_*
    variables of the cluster environment); runs on the cluster, so COE_DATABASE_URL etc. come from there."""
    from deploy.serve.app import build_app
    from deploy.settings import Settings

    settings = Settings(**{"local_experts": False, **(args or {})})
    return build_app(settings)


def expert_route_prefix(name: str) -> str:
    return f"{EXPERT_ROUTE_PREFIX}/{name}"


def expert_base_url(name: str, port: int = 8000) -> str:
    """The base_url to register for an in-cluster vLLM expert."""
    return f"http://127.0.0.1:{port}{expert_route_prefix(name)}/v1"


def _vllm_image(tag: str) -> str:
    return tag if ("/" in tag or ":" in tag) else f"{RAY_LLM_IMAGE}:{tag}"


def llm_config(
    expert: ExpertInfo,
    *,
    accelerator_type: str | None = None,
    model_source: str | None = None,
    max_replicas: int = 2,
    vllm_tag: str | None = None,
    cpu: bool = False,
    cpu_kvcache_gib: int | None = None,
) -> dict[str, Any]:
    """The `LLMConfig` (as a plain dict) serving `expert` (an ExpertInfo) with ray.serve.llm + vLLM.

    `cpu`: vLLM's CPU engine. Ray Serve LLM resolves an LLMConfig without `accelerator_config` (and
    without GPU-free placement bundles) to a GPU config: its placement group asks for {"GPU": 1}, which a
    CPU-only cluster never grants, so the replica waits for ever. `accelerator_config: {kind: cpu}`
    makes it ask for {"CPU": 1} and run vLLM with the multiprocessing executor; `accelerator_type`
    (a GPU type) is refused with it. CPU has no CUDA graphs, so the engine runs eager (no torch.compile,
    start-up in seconds), and `cpu_kvcache_gib` sets VLLM_CPU_KVCACHE_SPACE (GiB of KV cache)."""
    if cpu and accelerator_type:
        raise ValueError("accelerator_type names a GPU; it cannot be used with the CPU engine")
    cfg: dict[str, Any] = {
        "model_loading_config": {"model_id": expert.model, "model_source": model_source or expert.model},
        "deployment_config": {
            "autoscaling_config": {
                "min_replicas": 1,
                "max_replicas": max(1, max_replicas),
                "target_ongoing_requests": max(1, expert.max_concurrency // 2),
            },
            "max_ongoing_requests": max(1, expert.max_concurrency),
        },
        "engine_kwargs": {"max_model_len": expert.max_context},
    }
    if accelerator_type:
        cfg["accelerator_type"] = accelerator_type
    runtime_env: dict[str, Any] = {}
    if vllm_tag:
        runtime_env["image_uri"] = _vllm_image(vllm_tag)
    if cpu:
        cfg["accelerator_config"] = {"kind": "cpu"}
        cfg["engine_kwargs"]["enforce_eager"] = True
        if cpu_kvcache_gib is not None:
            runtime_env["env_vars"] = {"VLLM_CPU_KVCACHE_SPACE": str(cpu_kvcache_gib)}
    if runtime_env:
        cfg["runtime_env"] = runtime_env
    return cfg


def coe_application(
    settings: Settings, *, autoscale: bool = True, max_replicas: int | None = None
) -> dict[str, Any]:
    """The CoE app of the Serve config: its deployments from the same table as build_app."""
    top = max_replicas if max_replicas is not None else settings.autoscale_max_replicas
    # an unset field (None: e.g. the threshold, which then comes from the router artifact) is left out
    args = {k: v for k in _ARG_FIELDS if (v := getattr(settings, k)) is not None}
    args["autoscale"] = autoscale
    args["autoscale_max_replicas"] = top
    args["local_experts"] = False
    deployments = [
        {
            "name": spec.name,
            **scaling(spec, autoscale, top),
            "ray_actor_options": {**actor_options(spec.cpus, spec.resources), "num_gpus": 0},
            **graceful(spec),
        }
        for spec in deployment_specs(settings)
    ]
    return {
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": COE_IMPORT_PATH,
        "runtime_env": {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "COE_LOCAL_EXPERTS": "false"}},
        "args": args,
        "deployments": deployments,
    }


def render_config(
    snapshot: RegistrySnapshot,
    settings: Settings,
    *,
    vllm_tag: str | None = None,
    accelerator_type: str | None = None,
    model_sources: dict[str, str] | None = None,
    autoscale: bool = True,
    max_replicas: int | None = None,
    expert_max_replicas: int = 2,
    cpu: bool = False,
    cpu_kvcache_gib: int | None = None,
) -> dict[str, Any]:
    """The Serve config (a dict in the ServeDeploySchema shape) for `snapshot` (a RegistrySnapshot);
    `cpu`: the vLLM experts on vLLM's CPU engine (see `llm_config`)."""
    sources = model_sources or {}
    apps = [coe_application(settings, autoscale=autoscale, max_replicas=max_replicas)]
    for name in snapshot.tagged(VLLM_TAG):
        expert = snapshot.experts[name]
        cfg = llm_config(
            expert,
            accelerator_type=accelerator_type,
            model_source=sources.get(name),
            max_replicas=expert_max_replicas,
            vllm_tag=vllm_tag,
            cpu=cpu,
            cpu_kvcache_gib=cpu_kvcache_gib,
        )
        apps.append(
            {
                "name": f"expert-{name}",
                "route_prefix": expert_route_prefix(name),
                "import_path": LLM_IMPORT_PATH,
                "args": {"llm_configs": [cfg]},
            }
        )
    return {
        "proxy_location": settings.proxy_location,
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": apps,
    }


def required_env(snapshot: RegistrySnapshot) -> list[str]:
    """Environment variables the cluster must provide (from Secrets): the registry URL and the expert keys."""
    keys = {e.api_key_env for e in snapshot.experts.values() if e.enabled and e.api_key_env}
    return ["COE_DATABASE_URL", *sorted(keys)]


def base_url_warnings(snapshot: RegistrySnapshot) -> list[str]:
    out = []
    for name in snapshot.tagged(VLLM_TAG):
        url = snapshot.experts[name].base_url.rstrip("/")
        if not url.endswith(f"{expert_route_prefix(name)}/v1"):
            out.append(
                f"expert {name} is tagged {VLLM_TAG} but its base_url is {url}; "
                f"the rendered app serves it at {expert_base_url(name)}"
            )
    return out


def validate_config(config: dict[str, Any]) -> None:
    """Validate against Ray's ServeDeploySchema, and each LLM app's llm_configs against LLMConfig
    (ray's internal model; skipped when that module cannot load)."""
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)
    try:
        from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
    except Exception:  # noqa: BLE001 - optional deeper check
        return
    for app in config.get("applications", []):
        if app.get("import_path") == LLM_IMPORT_PATH:
            for cfg in app.get("args", {}).get("llm_configs", []):
                LLMConfig.model_validate(cfg)


def dump_config(
    config: dict[str, Any], snapshot: RegistrySnapshot | None = None, env: dict[str, str] | None = None
) -> str:
    """The config as YAML under a header; `env`: Serve's switches to list (default: `serve_env` of the
    default front door)."""
    header = [
        "# Ray Serve config rendered by `coe deploy render`; deploy with `serve deploy <file>`",
        "# or embed under spec.serveConfigV2 of a KubeRay RayService (see docs/deploy.md).",
    ]
    if snapshot is not None:
        header.append(f"# registry revision {snapshot.revision}; environment the cluster must provide:")
        header.extend(f"#   {name}" for name in required_env(snapshot))
    header.append("# Ray Serve request-path settings to export on every node before `ray start`:")
    header.extend(f"#   {name}={value}" for name, value in (env or serve_env(DEFAULT_INGRESS)).items())
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
