"""experts/vllm_server.py and the `local_engine` setting without an engine: the command it runs, what it
says when vLLM is missing (one line, a non-zero exit from `coe up`), and the capabilities the local
experts declare per engine. The engine itself: tests/deploy/test_vllm_service.py (marker `vllm`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.settings import REPO_ROOT
from experts.local_model import PERSONAS
from experts.vllm_server import default_vllm_python, start_vllm_server, vllm_command, vllm_missing
from router.errors import ExpertConnectionError
from tests.conftest import ENV


def test_the_command_serves_every_persona_with_guided_tools(tmp_path: Path) -> None:
    cmd = vllm_command("/v/bin/python", tmp_path, host="127.0.0.1", port=9, served=["a", "b"])
    assert cmd[0] == "/v/bin/python" and cmd[1] == "-c"  # the parent-watch wrapper around the server
    assert "vllm.entrypoints.openai.api_server" in cmd[2]
    args = cmd[3:]
    assert args[args.index("--served-model-name") + 1 : args.index("--served-model-name") + 3] == ["a", "b"]
    assert args[args.index("--tool-strict-level") + 1] == "parameter"
    assert args[args.index("--max-model-len") + 1] == "2048" and "--enforce-eager" in args


def test_default_python_is_the_repo_venv_or_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COE_VLLM_PYTHON", raising=False)
    assert default_vllm_python() == REPO_ROOT / ".venv-vllm" / "bin" / "python"
    monkeypatch.setenv("COE_VLLM_PYTHON", "/opt/v/bin/python")
    assert default_vllm_python() == Path("/opt/v/bin/python")


def test_missing_vllm_is_said_in_one_line(tmp_path: Path) -> None:
    assert "make vllm" in (vllm_missing(tmp_path / "nope" / "python") or "")
    said = vllm_missing(sys.executable)  # the project's venv has no vllm (its pins differ)
    assert said is not None and "does not import" in said and "\n" not in said
    with pytest.raises(ExpertConnectionError, match="cannot start vLLM: no vLLM venv"):
        start_vllm_server(0, python=tmp_path / "nope" / "python", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("env", "code", "said"),
    [
        (
            {"COE_LOCAL_ENGINE": "tgi"},
            2,
            "error: invalid settings: COE_LOCAL_ENGINE: must be one of transformers, vllm, not 'tgi'",
        ),
        (
            {"COE_LOCAL_ENGINE": "vllm", "COE_VLLM_PYTHON": "/nonexistent/python"},
            1,
            "error: cannot start vLLM: no vLLM venv at /nonexistent/python",
        ),
    ],
)
def test_coe_up_with_a_bad_engine_setting_fails_in_one_line(
    tmp_path: Path, env: dict[str, str], code: int, said: str
) -> None:
    full = {**os.environ, **ENV, **env, "COE_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}", "COE_PORT": "0"}
    full["COE_DATA_DIR"] = str(tmp_path)
    full.pop("COE_CONFIG", None)
    r = subprocess.run(
        [sys.executable, "-m", "deploy.ops.cli", "up"],
        cwd=REPO_ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(said) and "Traceback" not in r.stdout + r.stderr


def test_local_experts_declare_what_their_engine_serves(sqlite_db_url: str) -> None:
    from deploy.ops.local import _declare_engine_capabilities
    from registry import Registry
    from registry import repository as repo

    with Registry(sqlite_db_url) as reg:
        reg.revision()
        with reg.session() as s:
            repo.add_expert(
                s, name="local-math", base_url="http://x/v1", model="smollm2-math", tags=("local",)
            )
            repo.add_expert(s, name="ext", base_url="http://y/v1", model="m", capabilities=("vision",))
        _declare_engine_capabilities(reg, "vllm")
        snap = reg.snapshot()
        assert set(snap.experts["local-math"].capabilities) == {"json", "tools"}
        assert snap.experts["ext"].capabilities == ("vision",)  # not a local expert: untouched
        _declare_engine_capabilities(reg, "transformers")
        assert reg.snapshot().experts["local-math"].capabilities == ()
    assert "smollm2-math" in PERSONAS
