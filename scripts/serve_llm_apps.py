"""Deploy the `ray.serve.llm` applications of a rendered Serve config (`coe deploy render`) on a local Ray
that this interpreter starts, and keep them up until SIGTERM / SIGINT.

Run it with the vLLM venv's Python (`.venv-vllm/bin/python`: vLLM's CPU build and the same Ray as the
project), since vLLM's pins differ from the project's and a Ray Serve LLM replica imports vLLM in-process:

    .venv-vllm/bin/python scripts/serve_llm_apps.py serve.yaml --port 18000 [--num-cpus 4]

Each application whose import_path is `ray.serve.llm:build_openai_app` is built from its own `args` and
deployed at its own route_prefix, exactly as `serve deploy` would on a cluster whose image has vLLM; the
CoE app of the file runs elsewhere (`coe up`, in the project's venv) and reaches these over HTTP at
http://127.0.0.1:PORT/experts/<name>/v1. Prints `ready <port>` once every application is RUNNING;
exit 1 with one stderr line when one fails (DEPLOY_FAILED) or does not start in --timeout seconds."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

LLM_IMPORT_PATH = "ray.serve.llm:build_openai_app"


def _watch_parent() -> None:
    """Stop (SIGTERM to self) when the process that started us (COE_PARENT_PID) is gone."""
    parent = os.environ.get("COE_PARENT_PID", "")
    if not parent.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="serve_llm_apps.py", description=__doc__.splitlines()[0])
    ap.add_argument("config", help="the Serve config written by `coe deploy render`")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--num-cpus", type=int, default=4, help="CPUs the local Ray node advertises")
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args(argv)

    import yaml

    with open(args.config) as f:
        config = yaml.safe_load(f)
    apps = [a for a in config.get("applications", []) if a.get("import_path") == LLM_IMPORT_PATH]
    if not apps:
        print(f"error: {args.config} has no {LLM_IMPORT_PATH} application", file=sys.stderr)
        return 1

    import ray
    from ray import serve
    from ray.serve.llm import build_openai_app

    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=True,  # replica logs (vLLM, access lines) on our stdout
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own
        signal.signal(sig, lambda *_: stop.set())
    _watch_parent()
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        for app in apps:
            serve.run(
                build_openai_app(app.get("args") or {}),
                name=app["name"],
                route_prefix=app["route_prefix"],
                blocking=False,
            )
        names = [a["name"] for a in apps]
        deadline = time.monotonic() + args.timeout
        while not stop.is_set():
            status = serve.status().applications
            states = {n: status[n].status if n in status else "NOT_STARTED" for n in names}
            failed = [n for n, s in states.items() if s == "DEPLOY_FAILED"]
            if failed:
                print(f"error: {failed[0]}: {status[failed[0]].message[-1500:]}", file=sys.stderr)
                return 1
            if all(s == "RUNNING" for s in states.values()):
                break
            if time.monotonic() > deadline:
                print(f"error: not running after {args.timeout:.0f}s: {states}", file=sys.stderr)
                return 1
            stop.wait(1.0)
        if not stop.is_set():
            print(f"ready {args.port} {' '.join(names)}", flush=True)
        stop.wait()
        return 0
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
