"""`coe status`: the live figures of a running service (GET /admin/v1/status), as a Rich table that
never cuts an expert's name, or as JSON (`--json`)."""

from __future__ import annotations

import json
from typing import Annotated, Any, NoReturn

import typer

from router.errors import BadRequest, CoeError, Forbidden, NotFound, Unauthorized

_ERRORS: dict[int, type[CoeError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound}


def fetch_status(url: str, api_key: str | None, timeout: float = 10.0) -> dict[str, Any]:
    """The status document; typed errors for the service's own error answers, one line for the rest."""
    import httpx

    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    target = url.rstrip("/") + "/admin/v1/status"
    try:
        resp = httpx.get(target, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the service at {url}: {type(exc).__name__}: {exc}")
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code >= 400:
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        error = _ERRORS.get(resp.status_code)
        text = f"{url}: HTTP {resp.status_code}: {message or resp.text.strip()[:200]}"
        if error is not None:
            raise error(text)
        fail(text)
    return dict(body)


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def status(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option("--url", help="Service base URL (default: http://COE_HOST:COE_PORT).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="COE_API_KEY", help="An admin API key (or COE_API_KEY).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
) -> None:
    """Live status of a running service: per expert health, breaker, load, latency, errors, tokens, cost."""
    from registry.console import print_table

    if url is None:
        settings = ctx.obj.settings
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        url = f"http://{host}:{settings.port}"
    if not url.startswith(("http://", "https://")):
        raise BadRequest(f"--url must start with http:// or https://, got {url!r}")
    data = fetch_status(url, api_key)
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    router = data.get("router") or {}
    registry = data.get("registry") or {}
    cache = data.get("cache")
    typer.echo(
        f"router {router.get('router_version') or '?'} ({'ready' if router.get('ready') else 'NOT READY'}), "
        f"registry revision {registry.get('revision')}, {data.get('in_flight', 0)} requests in flight"
        + (f", cache {cache['hit']} hits / {cache['miss']} misses" if cache else "")
    )
    rows = [
        [
            e["name"],
            ("yes" if e["healthy"] else "NO") if e["enabled"] else "disabled",
            e.get("breaker") or "–",
            _num(e.get("in_flight"), "d"),
            _num(e.get("latency_ms"), ".1f"),
            _num(None if e.get("error_rate") is None else 100 * e["error_rate"], ".0f"),
            f"{e['calls']}/{e['errors']}",
            f"{e['prompt_tokens']}/{e['completion_tokens']}",
            f"{e['cost_usd']:.6f}",
        ]
        for e in data.get("experts", [])
    ]
    print_table(
        "experts",
        ["name", "healthy", "breaker", "in flight", "ms", "err %", "calls/err", "tokens in/out", "cost $"],
        rows,
        optional=("tokens in/out", "breaker"),
    )
