"""End to end: a router artifact with a quality head, trained on real per-query outcomes (150 RouterBench
MBPP prompts, GPT-4 vs Mistral-7B, correctness and real cost; ../shared/data, read at test time and never
stored), added to the live artifact with `coe router train --outcomes --base`, swapped in with
`coe router deploy`, and served: `/v1/route` with `coe-quality` decides by per-query predicted quality
and cost, a price-sensitive request goes to the cheap expert, and a chat completion is answered."""

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

MBPP = REPO_ROOT.parent / "shared" / "data" / "routerbench" / "mbpp_train.csv"
STRONG, CHEAP = "gpt-4-1106-preview", "mistralai/mistral-7b-chat"

pytestmark = [
    pytest.mark.serve,
    pytest.mark.slow,
    pytest.mark.shared_data,
    pytest.mark.skipif(not MBPP.is_file(), reason="../shared/data/routerbench is absent"),
]


def wait_for_artifact(service: Service, path: object) -> None:
    deadline = time.monotonic() + 180
    while httpx.get(f"{service.base}/readyz", timeout=30).json().get("router", {}).get("artifact") != str(
        path
    ):
        assert time.monotonic() < deadline, "the artifact was not swapped in"
        time.sleep(0.5)


def test_a_quality_head_artifact_serves(service: Service) -> None:
    csv.field_size_limit(1 << 30)
    rows = []
    with MBPP.open(encoding="utf-8", newline="") as fh:
        for r in list(csv.DictReader(fh))[:150]:
            rows.append(
                {
                    "id": r["sample_id"],
                    "prompt": ast.literal_eval(r["prompt"])[0],
                    "outcomes": {
                        m: {"quality": float(r[m]), "cost_usd": float(r[f"{m}|total_cost"])}
                        for m in (STRONG, CHEAP)
                    },
                }
            )
    data = service.tmp / "mbpp-outcomes.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    live = json.loads(httpx.get(f"{service.base}/readyz", timeout=30).text)["router"]["artifact"]
    out = (service.tmp / "artifact-quality").resolve()
    maps = ["--map", f"{STRONG}=q-strong", "--map", f"{CHEAP}=q-cheap"]
    coe(service, "router", "train", "--outcomes", str(data), "--format", "jsonl", "--base", live,
        "--out", str(out), "--heads", "knn", *maps)  # fmt: skip
    local = json.loads(coe(service, "experts", "show", "local-general", "--json"))
    for name, price in (("q-strong", "30"), ("q-cheap", "0.2")):
        coe(service, "experts", "add", name, "--url", local["base_url"], "--model", local["model"],
            "--cost-in", price, "--cost-out", price)  # fmt: skip
    try:
        coe(service, "router", "deploy", str(out))
        wait_for_artifact(service, out)
        text = "Write a python function to find the first repeated character in a given string."
        body = {"model": "coe-quality", "text": text, "routing": {"lambda": 0}}
        r = httpx.post(f"{service.base}/v1/route", json=body, timeout=60)
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["policy"] == "quality" and "predicted quality (knn)" in d["experts"][0]["reason"]
        assert d["experts"][0]["name"] in ("q-strong", "q-cheap")
        body["routing"] = {"wtp_usd": 1e-9}  # pays nothing for quality: the cheap expert
        r = httpx.post(f"{service.base}/v1/route", json=body, timeout=60)
        assert r.json()["experts"][0]["name"] == "q-cheap", r.text
        chat = {"model": "coe-quality", "messages": [{"role": "user", "content": text}], "max_tokens": 4,
                "routing": {"wtp_usd": 1e-9}}  # fmt: skip
        r = httpx.post(f"{service.base}/v1/chat/completions", json=chat, timeout=300)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "q-cheap" and r.json()["coe"]["policy"] == "quality"
    finally:
        coe(service, "router", "deploy", live)
        wait_for_artifact(service, live)
        for name in ("q-strong", "q-cheap"):
            coe(service, "experts", "remove", name)
