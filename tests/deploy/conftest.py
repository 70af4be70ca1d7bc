"""The running service, once per test session: `coe up` in a subprocess on free loopback ports, with
a fresh SQLite registry, the real router artifact and the real local SmolLM2 expert server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy.settings import DEFAULT_ROUTER_ARTIFACT, REPO_ROOT
from experts.net import free_port
from tests.conftest import ENV  # re-exported: the deploy tests import it from here

TINY_TRAINING = {
    "math": [
        "What is 12 times 7?",
        "Solve x^2 - 4 = 0",
        "Integrate x squared",
        "Derivative of sin x?",
        "Compute 15% of 80",
        "Area of a circle of radius 3",
    ],
    "computer science": [
        "Write a Python function to reverse a list",
        "What is a hash table?",
        "Big-O of quicksort?",
        "How do I fix a segfault in C?",
        "What does git rebase do?",
        "Write SQL to count rows",
    ],
    "health": [
        "What are symptoms of flu?",
        "How much sleep do adults need?",
        "Is ibuprofen safe with alcohol?",
        "What causes high blood pressure?",
        "How to treat a sprained ankle?",
        "Normal heart rate?",
    ],
    "other": [
        "Tell me a joke",
        "What is the capital of France?",
        "Recommend a good book",
        "How do I bake bread?",
        "Weather on Mars?",
        "Write a haiku about autumn",
    ],
}


def router_artifact(tmp: Path) -> Path:
    """The bundled default artifact; a tiny one trained here when it has not been built yet."""
    if (DEFAULT_ROUTER_ARTIFACT / "manifest.json").is_file():
        return DEFAULT_ROUTER_ARTIFACT
    from eval.data.datasets import Example
    from eval.training.train import train_router
    from router.embedder import SentenceTransformerEmbedder

    examples = [Example(t, c, id=f"{c}-{i}") for c, ts in TINY_TRAINING.items() for i, t in enumerate(ts)]
    out = tmp / "tiny-artifact"
    train_router(
        examples,
        out=out,
        embedder=SentenceTransformerEmbedder("default"),
        val_fraction=0.25,
        show_progress=False,
    )
    return out


#: the e2e stacks' quick registry polling, request batching and health checks
QUICK = {"COE_REGISTRY_POLL_S": "0.5", "COE_BATCH_WAIT_S": "0.01", "COE_HEALTH_INTERVAL_S": "2"}


def coe_up_env(tmp: Path, port: int, artifact: Path, **settings: str) -> dict[str, str]:
    """`coe up`'s environment in a test: a fresh SQLite registry in `tmp`, the router `artifact`, `port`, the
    local expert on a free port, `settings` (COE_* variables) on top, no COE_CONFIG. The converted SmolLM2
    folder is reused across sessions (COE_TEST_DATA_DIR, default .coe: the first conversion takes a while)."""
    env = {
        **os.environ,
        **ENV,
        "COE_DATABASE_URL": f"sqlite:///{tmp / 'coe.db'}",
        "COE_DATA_DIR": str(Path(os.environ.get("COE_TEST_DATA_DIR", REPO_ROOT / ".coe"))),
        "COE_ROUTER_ARTIFACT": str(artifact),
        "COE_PORT": str(port),
        "COE_LOCAL_EXPERT_PORT": "0",
        "PYTHONPATH": str(REPO_ROOT),
        **settings,
    }
    env.pop("COE_CONFIG", None)
    return env


def launch_coe_up(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`coe up` in its own process session (so it can be killed whole), output to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "deploy.ops.cli", "up"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until_up(proc: subprocess.Popen[bytes], log: Path, timeout: float = 420) -> None:
    """Until `coe up` prints its ready line; fails with the log's tail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while "Press Ctrl-C to stop." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:]
            pytest.fail(f"coe up did not start (exit {proc.poll()}):\n{tail}")
        time.sleep(0.5)


def run_coe(service: Service, *args: str) -> str:
    """`coe ARGS` against the service's registry in a subprocess; its stdout (the test fails on exit != 0)."""
    env = {**os.environ, **ENV, "COE_DATABASE_URL": service.database_url, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("COE_CONFIG", None)
    r = subprocess.run(
        [sys.executable, "-m", "deploy.ops.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, f"coe {' '.join(args)}: {r.stderr[-2000:]}"
    return r.stdout


@dataclass
class Service:
    base: str
    database_url: str
    artifact: Path
    tmp: Path
    process: subprocess.Popen[bytes]
    log: Path
    topology: str = "onehop"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 90.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return int(self.process.returncode)


@contextlib.contextmanager
def coe_up(tmp: Path, topology: str = "onehop", **settings: str) -> Iterator[Service]:
    """`coe up` on a free port with the router artifact (coe_up_env), until it says it is ready; stopped, and
    its artifact copy removed, on the way out."""
    artifact, port = router_artifact(tmp), free_port()
    env = coe_up_env(tmp, port, artifact, COE_TOPOLOGY=topology, **settings)
    log = tmp / "up.log"
    proc = launch_coe_up(env, log)
    svc = Service(f"http://127.0.0.1:{port}", env["COE_DATABASE_URL"], artifact, tmp, proc, log, topology)
    try:
        wait_until_up(proc, log)
        yield svc
    finally:
        svc.stop()
        shutil.rmtree(tmp / "artifact-copy", ignore_errors=True)


@pytest.fixture(scope="session", params=["onehop", "split"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The whole e2e suite runs against both topologies (one Serve hop, and ingress → router → gateway)."""
    import httpx

    topology = request.param
    with coe_up(tmp_path_factory.mktemp(f"coe-up-{topology}"), topology, **QUICK) as svc:
        assert httpx.get(f"{svc.base}/readyz", timeout=30).status_code == 200
        yield svc


@pytest.fixture
def registry(sqlite_db_url: str) -> Iterator[Any]:
    """A fresh SQLite registry (a module may define its own, with rows in it)."""
    from registry import Registry

    with Registry(sqlite_db_url) as reg:
        yield reg


@pytest.fixture(scope="module")
def fake_vllm() -> Iterator[Any]:
    """tests/fake_vllm.py behind the protocol-adapter tests (tests/deploy/adapter_kit.py), one per module."""
    from tests.deploy.adapter_kit import start_fake_vllm

    yield from start_fake_vllm()


@pytest.fixture(scope="module")
def smollm() -> Iterator[Any]:
    """The real SmolLM2 expert server behind the protocol-adapter tests, one per module."""
    from tests.deploy.adapter_kit import start_smollm

    yield from start_smollm()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests on the shared `service` run grouped by topology, and within a group the ones marked
    `service_last` (they lock the service with API keys, or stop it) run after every other module's."""
    order = {"onehop": 0, "split": 1}

    def key(item: pytest.Item) -> tuple[int, ...]:
        callspec = getattr(item, "callspec", None)
        if "service" not in getattr(item, "fixturenames", ()) or callspec is None:
            return (0,)
        topology = callspec.params.get("service", "onehop")
        return (1, order.get(topology, 9), 1 if item.get_closest_marker("service_last") else 0)

    items.sort(key=key)
