"""A real CoE service with several ingress replicas, for tests/deploy/test_replicas.py: `coe up` in a
subprocess (local Ray, Ray Serve, the one-hop app with `COE_ROUTER_REPLICAS` replicas, the real router
artifact) in front of a real loopback OpenAI-compatible stub expert (a uvicorn subprocess), with a fresh
SQLite registry that maps every category to the stub and holds the keys the tests use."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from experts.net import free_port
from tests.deploy.conftest import ENV, Service, launch_coe_up, router_artifact, wait_until_up

STUB = "stub"
SLOW = "slow"  # the same stub answering after SLOW_S: requests that stay in flight (the drain test)
SLOW_S = 10.0
# 12 prompt tokens at 1000 USD per million: each answer costs 0.012 USD
COST_INPUT_PER_M = 1000.0
COST_PER_ANSWER = 12 * COST_INPUT_PER_M / 1e6

STUB_SERVER = r"""
import asyncio, sys, uuid, uvicorn
from fastapi import FastAPI
app = FastAPI()
DELAY = float(sys.argv[2])
BODY = {"id": "cmpl-stub", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}
@app.post("/v1/chat/completions")
async def chat(body: dict):
    if DELAY:
        await asyncio.sleep(DELAY)
    return {**BODY, "id": f"chatcmpl-{uuid.uuid4().hex[:24]}"}  # unique, as real servers answer
@app.get("/v1/models")
async def models():
    return {"object": "list", "data": [{"id": "stub", "object": "model"}]}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def start_stub(delay_s: float = 0.005) -> tuple[subprocess.Popen[bytes], str]:
    """The stub expert on a free loopback port; (process, base URL ending in /v1)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", STUB_SERVER, str(port), str(delay_s)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the stub expert did not start")


@dataclass
class Keys:
    admin: str
    query: str  # no limits
    rpm: str  # rpm limited (Stack.rpm)
    budget: str  # budget limited (Stack.budget_answers answers)
    ids: dict[str, str] = field(default_factory=dict)  # name -> key id


def seed(url: str, stub_base: str, slow_base: str, artifact: Path, *, rpm: int, budget_usd: float) -> Keys:
    """The stub mapped to every category of the artifact, the slow stub (by name only), and the keys."""
    from eval.training.seed import artifact_categories
    from registry import Registry, usage
    from registry import repository as repo

    with Registry(url) as reg, reg.session() as s:
        repo.add_expert(
            s,
            name=STUB,
            base_url=stub_base,
            model=STUB,
            max_concurrency=256,
            timeout_s=30,
            cost_input_per_m=COST_INPUT_PER_M,
        )
        if slow_base is not None:
            repo.add_expert(s, name=SLOW, base_url=slow_base, model=STUB, max_concurrency=256, timeout_s=30)
        for cat in artifact_categories(artifact):
            repo.add_category(s, name=cat)
            repo.map_expert(s, category=cat, expert=STUB, rank=1)
        plain: dict[str, str] = {}
        ids: dict[str, str] = {}
        for name, scopes in (
            ("admin", ["admin", "query"]),
            ("query", ["query"]),
            ("rpm", ["query"]),
            ("budget", ["query"]),
        ):
            rec, plain[name] = repo.create_api_key(s, scopes=scopes, name=name)
            ids[name] = rec.id
        usage.set_key_limits(s, key_id=ids["rpm"], rpm=rpm)
        usage.set_key_limits(s, key_id=ids["budget"], budget_usd=budget_usd, budget_period="day")
    return Keys(plain["admin"], plain["query"], plain["rpm"], plain["budget"], ids)


@dataclass
class Stack:
    service: Service
    stubs: list[subprocess.Popen[bytes]]
    keys: Keys
    replicas: int
    rpm: int
    budget_answers: int

    @property
    def base(self) -> str:
        return self.service.base

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {key or self.keys.query}"}

    def admin(self) -> dict[str, str]:
        return self.auth(self.keys.admin)

    def stop(self) -> None:
        try:
            self.service.stop()
        finally:
            for stub in self.stubs:
                stub.terminate()
                stub.wait(10)


def start_stack(tmp: Path, *, replicas: int = 2, rpm: int = 10, budget_answers: int = 5, **env: str) -> Stack:
    stubs: list[subprocess.Popen[bytes]] = []
    try:
        stub, stub_base = start_stub()
        stubs.append(stub)
        slow, slow_base = start_stub(SLOW_S)
        stubs.append(slow)
        artifact = router_artifact(tmp)
        db = f"sqlite:///{tmp / 'coe.db'}"
        budget_usd = budget_answers * COST_PER_ANSWER * 0.999
        keys = seed(db, stub_base, slow_base, artifact, rpm=rpm, budget_usd=budget_usd)
        port = free_port()
        full_env: dict[str, Any] = {
            **os.environ,
            **ENV,
            "COE_DATABASE_URL": db,
            "COE_ROUTER_ARTIFACT": str(artifact),
            "COE_PORT": str(port),
            "COE_LOCAL_EXPERTS": "false",
            "COE_ROUTER_REPLICAS": str(replicas),
            "COE_REGISTRY_POLL_S": "0.5",
            "COE_HEALTH_INTERVAL_S": "0",
            "COE_USAGE_FLUSH_S": "0.5",
            "COE_TORCH_THREADS": "1",
            "COE_CACHE": "exact",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            **env,
        }
        full_env.pop("COE_CONFIG", None)
        log = tmp / "up.log"
        proc = launch_coe_up(full_env, log)
        service = Service(f"http://127.0.0.1:{port}", db, artifact, tmp, proc, log)
        stack = Stack(service, stubs, keys, replicas, rpm, budget_answers)
        try:
            wait_until_up(proc, log)
        except BaseException:
            stack.stop()
            raise
        return stack
    except BaseException:
        for p in stubs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        raise


# ----- a two-node local Ray cluster (the autoscaling ramp) -------------------------------------------

RAY = str(Path(sys.executable).parent / "ray")


def ray_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`ray start --block` in its own session: the process tree is the node (raylet, workers, ...)."""
    ports = [
        "--node-ip-address=127.0.0.1",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        "--object-store-memory=100000000",
        "--disable-usage-stats",
        "--block",
    ]
    with open(log, "wb") as out:
        return subprocess.Popen(
            [RAY, "start", *args, *ports],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def ray_cluster(
    logs: Path,
    ray_tmp: str,
    env: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
    *,
    head: list[str],
    worker: list[str],
) -> str:
    """A head node (its own temp dir, no dashboard) and one worker node, each with its extra `ray start`
    arguments, appended to `procs` (head, then worker) as they start; the cluster's address once the head
    answers `ray status` (a head that exits or a 120 s wait raises with the end of its log)."""
    gcs_port = free_port()
    head_args = [f"--port={gcs_port}", f"--temp-dir={ray_tmp}", f"--ray-client-server-port={free_port()}"]
    node = ray_node(["--head", *head_args, "--include-dashboard=false", *head], logs / "head.log", env)
    procs.append(node)
    address = f"127.0.0.1:{gcs_port}"
    deadline = time.monotonic() + 120
    while subprocess.run(
        [RAY, "status", f"--address={address}"], env=env, capture_output=True, timeout=60
    ).returncode:
        if node.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((logs / "head.log").read_text()[-3000:])
        time.sleep(1)
    procs.append(ray_node([f"--address={address}", *worker], logs / "worker.log", env))
    return address


def cluster_env(env: dict[str, str], address: str, db: str, artifact: Path, port: int) -> dict[str, str]:
    """`coe up`'s environment on a local multi-node cluster at `address`: the registry `db`, the router
    `artifact`, the Serve `port`, no local experts, one proxy (on the head: the nodes share one IP), the
    router replicas at half a CPU and one embedder thread each."""
    return {
        **env,
        "COE_RAY_ADDRESS": address,
        "COE_DATABASE_URL": db,
        "COE_ROUTER_ARTIFACT": str(artifact),
        "COE_LOCAL_EXPERTS": "false",
        "COE_PORT": str(port),
        "COE_PROXY_LOCATION": "HeadOnly",
        "COE_ROUTER_CPUS": "0.5",
        "COE_TORCH_THREADS": "1",
    }


def front_door(port: int) -> str:
    """The name of the process listening on `port` (HAProxy, or the Ray actor of Serve's proxy)."""
    import psutil

    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return str(psutil.Process(c.pid).name())
    raise AssertionError(f"nothing listens on port {port}")


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a node's whole process tree (a lost node: nothing shuts down cleanly)."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=20)


@dataclass
class TwoNodes:
    """Head (2 CPUs) + worker node (2 CPUs) on loopback, `coe up` joined to them, the stub expert."""

    head: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    up: subprocess.Popen[bytes]
    stub: subprocess.Popen[bytes]
    base: str
    tmp: Path
    ray_tmp: str
    keys: Keys

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys.query}"}

    def replicas(self, deployment: str = "CoeIngress") -> tuple[int, int]:
        """Running replica processes of `deployment` on (head, worker)."""
        import psutil

        def on(node: subprocess.Popen[bytes]) -> int:
            n = 0
            try:
                children = psutil.Process(node.pid).children(recursive=True)
            except psutil.Error:
                return 0
            for p in children:
                try:
                    if f"ServeReplica:coe:{deployment}" in " ".join(p.cmdline()):
                        n += 1
                except psutil.Error:
                    pass
            return n

        return on(self.head), on(self.worker)

    def log(self, name: str = "up.log") -> str:
        return (self.tmp / name).read_text(errors="replace")

    def stop(self) -> None:
        if self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)  # coe up drains, then serve.shutdown
            try:
                self.up.wait(120)
            except subprocess.TimeoutExpired:
                kill_tree(self.up)
        for p in (self.worker, self.head, self.stub):  # every node by PID, never `ray stop`
            kill_tree(p)
            p.wait(30)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


def start_two_nodes(tmp: Path, **env: str) -> TwoNodes:
    """Two nodes and `coe up` joined to them (`env` on top of `cluster_env`). The nodes get the switches of
    the front door `COE_SERVE_INGRESS` names (default haproxy), as `ray start` on a real cluster must."""
    from deploy.serve.env import DEFAULT_INGRESS, local_ports_env, serve_env

    ingress = env.setdefault("COE_SERVE_INGRESS", DEFAULT_INGRESS)
    base_env = {**os.environ, **ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    base_env.update({**serve_env(ingress), **local_ports_env(ingress, free_port)})
    base_env.pop("COE_CONFIG", None)
    stub, stub_base = start_stub()
    procs: list[subprocess.Popen[bytes]] = []
    ray_tmp = tempfile.mkdtemp(prefix="coe-ray-", dir="/tmp")  # short: Ray's socket paths must fit
    try:
        artifact = router_artifact(tmp)
        db = f"sqlite:///{tmp / 'coe.db'}"
        keys = seed(db, stub_base, None, artifact, rpm=100_000, budget_usd=1e6)
        serve_port = free_port()
        address = ray_cluster(tmp, ray_tmp, base_env, procs, head=["--num-cpus=2"], worker=["--num-cpus=2"])
        head, worker = procs[-2:]
        up_env = cluster_env(base_env, address, db, artifact, serve_port)
        up_env.update(
            {"COE_GATEWAY_CPUS": "0.25", "COE_REGISTRY_POLL_S": "1", "COE_HEALTH_INTERVAL_S": "0", **env}
        )
        up = launch_coe_up(up_env, tmp / "up.log")
        procs.append(up)
        wait_until_up(up, tmp / "up.log")
        return TwoNodes(head, worker, up, stub, f"http://127.0.0.1:{serve_port}", tmp, ray_tmp, keys)
    except BaseException:
        for p in reversed([*procs, stub]):
            kill_tree(p)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        raise
