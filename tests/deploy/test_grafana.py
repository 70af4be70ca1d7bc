"""The Grafana dashboard queries only metrics the ingress exports (deploy/pipeline/metrics.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from deploy.pipeline.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "ops" / "grafana" / "coe-router.json"


def test_dashboard_uses_only_exported_metrics() -> None:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    assert len(exprs) >= 15 and len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    used = {m for e in exprs for m in re.findall(r"\b(coe_[a-z_]+)\b", e)}
    families = {f.name: f.type for f in Metrics().registry.collect()}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {name + s for name, kind in families.items() for s in suffixes.get(kind, ("",))}
    assert used <= exported, used - exported
    # every family is on the dashboard somewhere
    assert {n for n in families} <= {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in used}


def test_every_query_reads_the_chosen_source() -> None:
    """The `$prefix` variable picks the source: "" reads the proxy's /metrics (service-wide series),
    "ray_" reads Ray's metrics endpoint (deploy/pipeline/ray_export.py: the same families per replica,
    which every query sums). No query may read one source while the dashboard shows the other."""
    doc = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert [o["value"] for o in variables["prefix"]["options"]] == ["", "ray_"]
    assert variables["prefix"]["current"]["value"] == ""
    assert "${prefix}coe_" in variables["job"]["query"]
    for panel in doc["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            assert len(re.findall(r"\bcoe_", expr)) == len(re.findall(r"\$\{prefix\}coe_", expr)) > 0, expr
            # a series per replica (Ray) only adds up under an aggregation: no bare selector
            assert re.match(r"^(sum|histogram_quantile|max)\b", expr), expr
