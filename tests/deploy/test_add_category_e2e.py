"""End to end: a category learnt from examples reaches its expert through the running service.
`coe router add-category` extends the live artifact, `coe experts add` / `coe categories` map the new
category to a new expert, `coe router deploy` swaps the artifact in, and `/v1/route` sends a prompt like
the examples to that expert. Examples: Winogrande prompts (fill-in-the-blank pronoun puzzles, a task none
of the trained categories covers) from ../shared/data/routerbench, read at test time and never stored.
(A category copied from an existing one, e.g. HumanEval prompts beside `coding`, is rightly not claimed:
the gate is calibrated against the existing categories' own prompts.)"""

from __future__ import annotations

import ast
import csv
import json
import time

import httpx
import pytest

from deploy.settings import REPO_ROOT
from tests.deploy.conftest import Service
from tests.deploy.conftest import run_coe as coe

WINOGRANDE = REPO_ROOT.parent / "shared" / "data" / "routerbench" / "winograde_train.csv"

pytestmark = [
    pytest.mark.serve,
    pytest.mark.slow,
    pytest.mark.shared_data,
    pytest.mark.skipif(not WINOGRANDE.is_file(), reason="../shared/data/routerbench is absent"),
]


def test_added_category_routes_to_its_expert(service: Service) -> None:
    csv.field_size_limit(1 << 30)
    with WINOGRANDE.open(encoding="utf-8", newline="") as fh:
        prompts = [ast.literal_eval(r["prompt"])[0].strip() for r in csv.DictReader(fh)]
    examples, probe = prompts[:20], prompts[100]
    ex_file = service.tmp / "puzzle-examples.txt"
    # one prompt per line: the prompts span several lines, so join each one's lines
    ex_file.write_text("".join(" ".join(p.split()) + "\n" for p in examples), encoding="utf-8")
    out = service.tmp / "artifact-puzzle"
    coe(
        service,
        "router",
        "add-category",
        "puzzle",
        "--examples",
        str(ex_file),
        "--out",
        str(out),
        "--router",
        str(service.artifact),
    )
    local = json.loads(coe(service, "experts", "show", "local-general", "--json"))
    coe(service, "experts", "add", "local-puzzle", "--url", local["base_url"], "--model", local["model"])
    coe(service, "categories", "add", "puzzle")
    coe(service, "categories", "map", "puzzle", "local-puzzle", "--rank", "1")
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
    assert body["categories"][0]["category"] == "puzzle"
    assert body["experts"][0]["name"] == "local-puzzle" and body["fallback"] is False
