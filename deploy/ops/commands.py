"""`coe up` and `coe router deploy`. Heavy imports (ray, torch) happen inside the commands only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deploy.ops.status import status as status_command


def up(
    ctx: typer.Context,
    check: Annotated[
        bool,
        typer.Option("--check", "--smoke", help="Start, send one real query, print answer and route, stop."),
    ] = False,
    host: Annotated[
        str | None, typer.Option(help="HTTP bind address (default from settings: loopback).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (0 = a free one).")] = None,
    question: Annotated[str | None, typer.Option(help="The --check query.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray and replica logs.")] = False,
) -> None:
    """Run the embedded default: local CPU experts, SQLite registry, the default router, Ray Serve."""
    from deploy.ops.local import SMOKE_QUESTION
    from deploy.ops.local import up as run_up

    settings = ctx.obj.settings
    update = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if update:
        settings = settings.model_copy(update=update)
    raise typer.Exit(run_up(settings, check=check, question=question or SMOKE_QUESTION, verbose=verbose))


def router_deploy(
    ctx: typer.Context,
    artifact: Annotated[
        Path, typer.Argument(help="Router artifact directory (manifest.json, model.npz, ...).")
    ],
) -> None:
    """Validate a router artifact and make it the live router (the service hot-swaps it)."""
    from deploy.pipeline.router_service import ARTIFACT_SETTING, validate_artifact
    from registry import Registry

    settings = ctx.obj.settings
    path = artifact.expanduser().resolve()
    version = validate_artifact(path, settings)
    with Registry(settings.database_url) as reg:
        revision = reg.set_setting(ARTIFACT_SETTING, str(path))
    typer.echo(
        f"router {version} at {path} deployed (registry revision {revision}); "
        "running services swap it in within a few seconds"
    )


deploy_app = typer.Typer(help="Cluster deployment: render Ray Serve / KubeRay configs.", no_args_is_help=True)


@deploy_app.command("render")
def deploy_render(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Serve config file to write ('-' = stdout).")],
    vllm_tag: Annotated[
        str | None,
        typer.Option(help="ray-llm image tag (or full image) for in-cluster vLLM experts' runtime_env."),
    ] = None,
    accelerator_type: Annotated[
        str | None, typer.Option(help="GPU type for vLLM experts (H100, A100, L4, ...); default: any GPU.")
    ] = None,
    model_source: Annotated[
        list[str] | None,
        typer.Option(help="NAME=SOURCE: weights (HF repo or path) of a vLLM expert; default its model name."),
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(help="Autoscaling ceiling of the CPU deployments (default from settings).")
    ] = None,
    expert_max_replicas: Annotated[int, typer.Option(help="Autoscaling ceiling of each vLLM expert.")] = 2,
    autoscale: Annotated[bool, typer.Option(help="Autoscale the CPU deployments.")] = True,
    cpu: Annotated[
        bool, typer.Option("--cpu", help="vLLM experts on vLLM's CPU engine (accelerator_config kind cpu).")
    ] = False,
    cpu_kvcache_gib: Annotated[
        int | None,
        typer.Option(min=1, help="With --cpu: GiB of KV cache per engine (VLLM_CPU_KVCACHE_SPACE)."),
    ] = None,
) -> None:
    """Render the registry as a Ray Serve config: the CoE app plus a ray.serve.llm app per `vllm` expert."""
    from deploy.ops import render
    from deploy.serve.env import serve_env
    from registry import Registry
    from router.errors import BadRequest

    sources: dict[str, str] = {}
    for item in model_source or []:
        name, sep, src = item.partition("=")
        if not sep or not name or not src:
            raise BadRequest(f"--model-source wants NAME=SOURCE, got {item!r}")
        sources[name] = src
    settings = ctx.obj.settings
    with Registry(settings.database_url) as reg:
        snapshot = reg.snapshot()
    unknown = sorted(set(sources) - set(snapshot.tagged(render.VLLM_TAG)))
    if unknown:
        raise BadRequest(
            f"--model-source for experts not enabled and tagged {render.VLLM_TAG}: {', '.join(unknown)}"
        )
    if cpu and accelerator_type:
        raise BadRequest("--accelerator-type names a GPU; it cannot be used with --cpu")
    config = render.render_config(
        snapshot,
        settings,
        vllm_tag=vllm_tag,
        accelerator_type=accelerator_type,
        model_sources=sources,
        autoscale=autoscale,
        max_replicas=max_replicas,
        expert_max_replicas=expert_max_replicas,
        cpu=cpu,
        cpu_kvcache_gib=cpu_kvcache_gib,
    )
    try:
        render.validate_config(config)
    except Exception as exc:  # pydantic ValidationError: bad input such as an unknown accelerator type
        raise BadRequest(f"rendered config does not validate: {exc}") from None
    text = render.dump_config(config, snapshot, serve_env(settings.serve_ingress))
    for warning in render.base_url_warnings(snapshot):
        typer.echo(f"warning: {warning}", err=True)
    if str(out) == "-":
        typer.echo(text, nl=False)
        return
    out.write_text(text)
    n = len(config["applications"]) - 1
    typer.echo(f"wrote {out}: CoE app + {n} vLLM expert app(s) (registry revision {snapshot.revision})")


def register(app: typer.Typer, router_app: typer.Typer) -> None:
    """`coe up`, `coe status`, `coe deploy …` on `app`; `coe router deploy` on `router_app`
    (eval.commands.cli.build_router_app(), built by deploy/ops/cli.py)."""
    app.command("up")(up)
    app.command("status")(status_command)
    app.add_typer(deploy_app, name="deploy")
    router_app.command("deploy")(router_deploy)
