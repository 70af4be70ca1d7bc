"""End to end: a category learnt from examples reaches its expert through the running service.
`coe router add-category` extends the live artifact, `coe experts add` / `coe categories` map the new
category to a new expert, `coe router deploy` swaps the artifact in, and `/v1/route` sends a prompt like
the examples to that expert. Examples: HumanEval problems from ../shared/data."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from deploy.settings import REPO_ROOT
from tests.deploy.conftest import ENV, Service

HUMANEVAL = REPO_ROOT.parent / "shared" / "data" / "humaneval" / "HumanEval.jsonl.gz"

pytestmark = [
    pytest.mark.serve,
    pytest.mark.slow,
    pytest.mark.shared_data,
    pytest.mark.skipif(not HUMANEVAL.is_file(), reason="../shared/data/humaneval is absent"),
]


def coe(service: Service, *args: str) -> str:
    env = {**os.environ, **ENV, "COE_DATABASE_URL": service.database_url, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("COE_CONFIG", None)
    r = subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, f"coe {' '.join(args)}: {r.stderr[-2000:]}"
    return r.stdout


def test_added_category_routes_to_its_expert(service: Service) -> None:
    with gzip.open(HUMANEVAL, "rt", encoding="utf-8") as fh:
        prompts = [json.loads(line)["prompt"].strip() for line in fh if line.strip()]
    examples, probe = prompts[:20], prompts[100]
    ex_file = service.tmp / "python-examples.txt"
    # one prompt per line: the examples are multi-line functions, so join each one's lines
    ex_file.write_text("".join(" ".join(p.split()) + "\n" for p in examples), encoding="utf-8")
    out = service.tmp / "artifact-python"
    coe(
        service,
        "router",
        "add-category",
        "python",
        "--examples",
        str(ex_file),
        "--out",
        str(out),
        "--router",
        str(service.artifact),
    )
    local = json.loads(coe(service, "experts", "show", "local-code", "--json"))
    coe(service, "experts", "add", "local-python", "--url", local["base_url"], "--model", local["model"])
    coe(service, "categories", "add", "python")
    coe(service, "categories", "map", "python", "local-python", "--rank", "1")
    coe(service, "router", "deploy", str(out))

    deadline = time.monotonic() + 120
    while httpx.get(f"{service.base}/readyz", timeout=30).json().get("router", {}).get("artifact") != str(
        out.resolve()
    ):
        assert time.monotonic() < deadline, "the new artifact was not swapped in"
        time.sleep(0.5)
    r = httpx.post(f"{service.base}/v1/route", json={"text": probe, "routing": {"policy": "category"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["categories"][0]["category"] == "python"
    assert body["experts"][0]["name"] == "local-python" and body["fallback"] is False
