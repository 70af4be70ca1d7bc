"""A two-node Ray cluster on one machine (loopback only): a head node and a second node started with
`ray start --address ...`, the CoE app deployed across both by `coe up` with COE_RAY_ADDRESS, and one
node killed (every process of it, by PID) while clients keep sending queries, in both topologies. So
that the node is lost with requests in flight on its replica, that replica is first stopped (SIGSTOP)
until some are held there:

- split: the lost node held a router replica. Nothing may fail, even for clients that never retry: a
  request in flight on the lost replica is retried by the ingress (on the head) on the surviving one.
- onehop: the lost node held an ingress replica (which embeds and calls the experts itself). Requests in
  flight on it fail at the Serve proxy with a 5xx or a dropped connection; clients that retry as the
  OpenAI SDKs do (max_retries=2 on 5xx and connection errors) lose nothing, and every request after the
  loss goes to the surviving replica.

Placement is made deterministic with custom resources: each node offers `coe_router: 1` and the
router asks for one unit per replica, so its two replicas land one per node; the ingress and the
gateway ask for `coe_core`, which only the head offers. The experts are an instant OpenAI-compatible
stub (a test double: the capability under test is losing a router node, not the experts)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from deploy.settings import REPO_ROOT
from experts.net import free_port
from tests.deploy.conftest import ENV, launch_coe_up, router_artifact, wait_until_up
from tests.deploy.replicas_stack import cluster_env, kill_tree, ray_cluster

pytestmark = [pytest.mark.serve, pytest.mark.slow]


STUB = r"""
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.post("/v1/chat/completions")
async def chat(body: dict):
    return {"id": "cmpl-stub", "object": "chat.completion", "created": 0, "model": body.get("model", "stub"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
@app.get("/v1/models")
async def models():
    return {"object": "list", "data": [{"id": "stub", "object": "model"}]}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def _replicas_on(proc: subprocess.Popen[bytes], deployment: str) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(proc.pid).children(recursive=True):
        try:
            if f"ServeReplica:coe:{deployment}" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


@dataclass
class Load:
    """Clients that keep sending chat completions until stopped; every outcome is recorded."""

    base: str
    retries: int = 0  # client-side retries per request, as the OpenAI SDK (0 = none)
    ok: int = 0
    retried: int = 0  # requests that needed a client retry
    slowest: float = 0.0  # the longest answer so far, in seconds
    failures: list[str] = field(default_factory=list)
    open: dict[int, float] = field(default_factory=dict)  # client -> when its request was sent
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self, i: int) -> None:
        # long prompts keep the router busy (MiniLM reads 256 word pieces), so requests are in flight
        # on the replica that is lost
        text = f"Client {i}: what is the derivative of x^{i} times sin(x)? " * 24
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        with httpx.Client(timeout=60) as client:
            n = 0
            while not self.stop.is_set() and n < 2000:  # bounded
                n += 1
                sent = time.monotonic()
                with self.lock:
                    self.open[i] = sent
                for attempt in range(self.retries + 1):
                    try:
                        r = client.post(f"{self.base}/v1/chat/completions", json=body)
                        good = r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "42"
                        outcome = None if good else f"{r.status_code} {r.text[:300]}"
                        transient = r.status_code >= 500
                    except httpx.HTTPError as exc:
                        outcome, transient = f"{type(exc).__name__}: {exc}", True
                    if outcome is None or not transient or attempt == self.retries:
                        break
                    time.sleep(0.5 * (attempt + 1))  # the SDK backs off 0.5 s, then 1 s
                with self.lock:
                    del self.open[i]
                    if outcome is None:
                        self.slowest = max(self.slowest, time.monotonic() - sent)
                        self.ok += 1
                        self.retried += attempt > 0
                    else:
                        self.failures.append(outcome)

    def wait_ok(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.ok < n:
            assert not self.failures, self.failures[:5]
            assert time.monotonic() < deadline, f"only {self.ok} answers in {timeout}s"
            time.sleep(0.1)

    def held(self, longer_than: float) -> int:
        """How many requests have been open for longer than `longer_than` seconds."""
        now = time.monotonic()
        with self.lock:
            return sum(now - t > longer_than for t in self.open.values())


def _busy(replica: psutil.Process, window: float = 0.05) -> bool:
    """Whether the replica spent at least half of the next `window` seconds on the CPU: it is embedding
    a request it has accepted (an idle replica only wakes for its health checks and metrics)."""
    before = sum(replica.cpu_times()[:2])
    time.sleep(window)
    return sum(replica.cpu_times()[:2]) - before >= window / 2


def hold_requests(load: Load, replica: psutil.Process, tries: int = 10) -> int:
    """Stop (SIGSTOP) the replica while it is working on a request, until requests are held on it, so
    that the node is lost with requests in flight there rather than by the luck of the moment. While it
    is busy, not idle: Ray Serve itself sends elsewhere a request the lost replica had not yet accepted
    (its slot reservation fails), so only an accepted one tests the ingress's retry. A request open for
    three times the slowest answer so far is one the stopped replica holds. Returns how many; the
    replica stays stopped (it is killed next), or, if none were held in `tries` pauses, is resumed
    and 0 returned."""
    for _ in range(tries):
        wait = max(2.0, 3 * load.slowest)
        deadline = time.monotonic() + 30
        while not _busy(replica) and time.monotonic() < deadline:
            pass
        replica.suspend()
        time.sleep(wait + 0.5)
        held = load.held(wait)
        if held:
            return held
        replica.resume()
        time.sleep(1)
    return 0


@dataclass
class Cluster:
    head: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    up: subprocess.Popen[bytes]
    base: str
    logs: Path
    topology: str

    def log(self, name: str) -> str:
        return (self.logs / name).read_text(errors="replace")[-4000:]


@pytest.fixture(params=["split", "onehop"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    from eval.training.seed import seed
    from registry import Registry

    env = {**os.environ, **ENV, "PYTHONPATH": str(REPO_ROOT)}
    # one Serve proxy, on the head (cluster_env: the nodes share one address), and a proxy prefers its
    # own node's replicas: the worker's ingress (onehop) would never see a request. Spread them over
    # both nodes, as a load balancer in front of every node's proxy would.
    env["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"
    env.pop("COE_CONFIG", None)
    procs: list[subprocess.Popen[bytes]] = []
    stub_port, serve_port = free_port(), free_port()
    # its own temp dir: the head records its address there (ray_current_cluster), not in /tmp/ray where
    # a later bare ray.init() elsewhere would find it and try to attach to this (by then dead) cluster
    ray_tmp = tempfile.mkdtemp(prefix="coe-ray-", dir="/tmp")  # short: Ray's socket paths must fit
    stub = subprocess.Popen([sys.executable, "-c", STUB, str(stub_port)], env=env)
    procs.append(stub)
    try:
        artifact = router_artifact(tmp_path)
        db = f"sqlite:///{tmp_path / 'coe.db'}"
        with Registry(db) as reg:
            assert seed(reg, artifact, f"http://127.0.0.1:{stub_port}/v1") is not None

        address = ray_cluster(
            tmp_path,
            ray_tmp,
            env,
            procs,
            head=["--num-cpus=4", "--resources=" + json.dumps({"coe_router": 1, "coe_core": 10})],
            worker=["--num-cpus=2", "--resources=" + json.dumps({"coe_router": 1})],
        )
        head, worker = procs[-2:]

        up_env = cluster_env(env, address, db, artifact, serve_port)
        up_env.update(
            {
                "COE_ROUTER_REPLICAS": "2",
                "COE_ROUTER_RESOURCES": json.dumps({"coe_router": 1}),
                "COE_GATEWAY_RESOURCES": json.dumps({"coe_core": 0.1}),
                "COE_INGRESS_RESOURCES": json.dumps({"coe_core": 0.1}),
                "COE_REGISTRY_POLL_S": "1",
                "COE_HEALTH_INTERVAL_S": "2",
                "COE_TOPOLOGY": request.param,
            }
        )
        up = launch_coe_up(up_env, tmp_path / "up.log")
        procs.append(up)
        wait_until_up(up, tmp_path / "up.log")
        yield Cluster(head, worker, up, f"http://127.0.0.1:{serve_port}", tmp_path, request.param)
    finally:
        up_proc = procs[3] if len(procs) == 4 else None
        if up_proc is not None and up_proc.poll() is None:
            up_proc.send_signal(signal.SIGINT)  # coe up: serve.shutdown, then disconnect
            try:
                up_proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        for p in reversed(procs):  # then every node, by PID, and the stub
            kill_tree(p)
            p.wait(30)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_losing_a_node_loses_no_request(cluster: Cluster) -> None:
    # the replica that embeds: the router (split) or the ingress (onehop), one on each node
    embedder = "CoeRouter" if cluster.topology == "split" else "CoeIngress"
    deadline = time.monotonic() + 300
    while not (_replicas_on(cluster.worker, embedder) and _replicas_on(cluster.head, embedder)):
        assert time.monotonic() < deadline, cluster.log("up.log") + cluster.log("worker.log")
        time.sleep(1)
    if cluster.topology == "split":
        assert not _replicas_on(cluster.worker, "CoeIngress") and not _replicas_on(
            cluster.worker, "CoeGateway"
        )
    else:
        assert not _replicas_on(cluster.worker, "CoeRouter") and not _replicas_on(cluster.head, "CoeGateway")

    worker_replica = _replicas_on(cluster.worker, embedder)[0]
    cpu_before = sum(worker_replica.cpu_times()[:2])
    load = Load(cluster.base, retries=0 if cluster.topology == "split" else 2)
    threads = [threading.Thread(target=load.worker, args=(i,), daemon=True) for i in range(12)]
    for t in threads:
        t.start()
    try:
        load.wait_ok(60, timeout=180)
        doomed = _replicas_on(cluster.worker, embedder)
        assert sum(worker_replica.cpu_times()[:2]) > cpu_before  # it was serving
        held = hold_requests(load, worker_replica)
        assert held, f"no request reached the {embedder} replica on the worker while it was stopped"
        kill_tree(cluster.worker)  # the node goes away with its replica
        assert doomed and not any(p.is_running() for p in doomed)
        at_kill = load.ok
        load.wait_ok(at_kill + 120, timeout=180)  # the surviving replica carries on
    finally:
        load.stop.set()
        for t in threads:
            t.join(90)
    assert load.failures == [], load.failures[:5]

    metrics = httpx.get(f"{cluster.base}/metrics", timeout=30).text
    retried = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("coe_replica_retries_total{")
    )
    print(
        f"{cluster.topology}: answered {load.ok} queries (slowest {load.slowest:.1f} s), {at_kill} before "
        f"the node was killed, {held} held on the lost replica; {retried:.0f} retried by the ingress, "
        f"{load.retried} by the clients"
    )
    if cluster.topology == "split":
        # the lost replica had requests in flight (held there): retried by the ingress, not failed
        assert retried >= 1 and load.retried == 0
    else:
        # the lost ingress replica's requests failed at the proxy and the clients retried them
        assert load.retried >= 1
