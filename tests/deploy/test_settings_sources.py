"""deploy/settings.py on pydantic-settings' own sources and types: kwargs over COE_* variables over the
YAML file of COE_CONFIG over defaults; the fixed-choice settings are Literals matched without regard to
case; bounds are Field constraints; every bad value or bad file is one line from `coe`, naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from deploy.settings import Settings, load_settings
from router.embedder import BACKENDS


@pytest.fixture(autouse=True)
def _no_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COE_CONFIG", "")  # recorded, so that what load_settings() sets is undone after
    for k in list(os.environ):
        if k.startswith("COE_"):
            monkeypatch.delenv(k)


def test_kwargs_over_env_over_yaml_over_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "coe.yaml"
    config.write_text("port: 9000\ncache: semantic\ntopology: split\nnot_a_setting: 1\n")
    monkeypatch.setenv("COE_CONFIG", str(config))
    assert (Settings().port, Settings().cache, Settings().topology) == (9000, "semantic", "split")
    monkeypatch.setenv("COE_PORT", "9100")
    assert Settings().port == 9100
    assert Settings(port=9200).port == 9200
    assert Settings().retries == 1  # a default


def test_choices_are_literals_given_in_any_case() -> None:
    s = Settings(cache=" Exact", proxy_location="headonly", topology="SPLIT", metrics_access="Admin")
    assert (s.cache, s.proxy_location, s.topology, s.metrics_access) == (
        "exact",
        "HeadOnly",
        "split",
        "admin",
    )
    assert get_args(Settings.model_fields["embedder_backend"].annotation) == BACKENDS


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"cache": "x"}, "must be one of off, exact, semantic, not 'x'"),
        ({"session_affinity": 3}, "must be one of tool_loop, conversation, off"),
        ({"local_engine": "llama"}, "must be one of transformers, vllm"),
        ({"port": 70000}, "less than or equal to 65535"),
        ({"local_expert_port": -1}, "greater than or equal to 0"),
        ({"handle_retries": 11}, "less than or equal to 10"),
        ({"router_resources": {"CPU": 1}}, "must not be CPU/GPU/memory"),
        ({"gateway_resources": {"pin": -1}}, "greater than or equal to 0"),
    ],
)
def test_a_bad_value_names_its_setting(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment) as info:
        Settings(**kwargs)  # type: ignore[arg-type]
    assert info.value.errors()[0]["loc"][0] == next(iter(kwargs))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "no such file"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("port: [\n", "cannot read settings file"),
    ],
)
def test_a_bad_settings_file_is_a_clear_error(tmp_path: Path, text: str | None, fragment: str) -> None:
    config = tmp_path / "coe.yaml"
    if text is not None:
        config.write_text(text)
    with pytest.raises(ValueError, match=fragment):
        load_settings(config)


@pytest.mark.parametrize(
    ("env", "file", "fragment"),
    [
        ({"COE_CACHE": "sometimes"}, None, "COE_CACHE: must be one of off, exact, semantic, not 'sometimes'"),
        ({"COE_PORT": "99999"}, None, "COE_PORT: Input should be less than or equal to 65535"),
        ({}, "port: [\n", "invalid settings: cannot read settings file"),
        ({}, "- 1\n", "must hold a mapping"),
    ],
)
def test_coe_reports_one_line(tmp_path: Path, env: dict[str, str], file: str | None, fragment: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COE_")}
    if file is not None:
        (tmp_path / "coe.yaml").write_text(file)
        env = {**env, "COE_CONFIG": str(tmp_path / "coe.yaml")}
    r = subprocess.run(
        [sys.executable, "-m", "deploy.ops.cli", "experts", "list"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid settings: "), r.stderr
    assert fragment in lines[0]
