"""`coe up`'s start-up errors: each is one stderr line and a non-zero exit, found before anything starts
(no expert server, no Ray). Subprocesses, as a newcomer would run it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.ops.preflight import check_ray_address
from deploy.settings import DEFAULT_ROUTER_ARTIFACT, REPO_ROOT
from experts.net import free_port
from router.errors import StartupError
from tests.deploy.conftest import ENV


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {
        **os.environ,
        **ENV,
        "COE_DATABASE_URL": f"sqlite:///{tmp_path / 'coe.db'}",
        "COE_DATA_DIR": str(tmp_path / "data"),
        "COE_ROUTER_ARTIFACT": str(DEFAULT_ROUTER_ARTIFACT),
        "COE_PORT": str(free_port()),
        "COE_LOCAL_EXPERT_PORT": str(free_port()),
        "PYTHONPATH": str(REPO_ROOT),
    }
    e.pop("COE_CONFIG", None)
    e.pop("COE_RAY_ADDRESS", None)
    return e


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def coe_up(env: dict[str, str]) -> tuple[int, str, str]:
    r = subprocess.run(
        [sys.executable, "-m", "deploy.ops.cli", "up"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
    )
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def assert_one_line(result: tuple[int, str, str], *needles: str) -> None:
    code, out, err = result
    assert code == 1, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert "starting" not in out  # found before the expert server or Ray started


def test_http_port_in_use(env: dict[str, str], listening: int) -> None:
    env["COE_PORT"] = str(listening)
    assert_one_line(coe_up(env), f"HTTP port {listening}", "already in use", "COE_PORT")


def test_local_expert_port_in_use(env: dict[str, str], listening: int) -> None:
    env["COE_LOCAL_EXPERT_PORT"] = str(listening)
    assert_one_line(coe_up(env), f"local expert port {listening}", "COE_LOCAL_EXPERT_PORT")


def test_ray_address_that_does_not_answer(env: dict[str, str]) -> None:
    env["COE_RAY_ADDRESS"] = f"127.0.0.1:{free_port()}"
    assert_one_line(coe_up(env), "does not answer", "COE_RAY_ADDRESS")


def test_stale_ray_session(tmp_path: Path) -> None:
    current = tmp_path / "ray_current_cluster"
    current.write_text(f"127.0.0.1:{free_port()}\n")  # what a killed head leaves behind
    with pytest.raises(StartupError, match="stale Ray session"):
        check_ray_address("auto", current=current)
    with pytest.raises(StartupError, match="no Ray cluster runs"):
        check_ray_address("auto", current=tmp_path / "absent")
    check_ray_address(None, current=current)  # the default starts a fresh Ray: never attaches


def test_unwritable_data_dir(env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env["COE_DATA_DIR"] = str(blocker / "data")  # under a file: cannot be created, as on a read-only mount
    assert_one_line(coe_up(env), "is not writable", "COE_DATA_DIR")


def test_full_data_dir(env: dict[str, str]) -> None:
    env["COE_MIN_FREE_DISK_MB"] = str(10**12)  # more than any disk has free: the disk counts as full
    assert_one_line(coe_up(env), "MiB free", "COE_MIN_FREE_DISK_MB")


def test_missing_router_artifact(env: dict[str, str], tmp_path: Path) -> None:
    env["COE_ROUTER_ARTIFACT"] = str(tmp_path / "no-such-artifact")
    assert_one_line(coe_up(env), "router artifact not found", "no-such-artifact")


def test_corrupt_router_artifact(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad-artifact"
    shutil.copytree(DEFAULT_ROUTER_ARTIFACT, bad)
    data = (bad / "model.npz").read_bytes()
    (bad / "model.npz").write_bytes(data[: len(data) // 3])
    env["COE_ROUTER_ARTIFACT"] = str(bad)
    assert_one_line(coe_up(env), "bad-artifact")


def test_unreachable_database(env: dict[str, str]) -> None:
    env["COE_DATABASE_URL"] = f"postgresql+psycopg://coe:secret@127.0.0.1:{free_port()}/coe"
    code, out, err = coe_up(env)
    assert_one_line((code, out, err), "unreachable")
    assert "secret" not in err  # the URL is shown without its password
