"""The service's figures through Ray's own metrics pipeline: every Serve replica mirrors its cumulative
counters, histograms and gauges (deploy/pipeline/metrics.py) into `ray.serve.metrics` metrics of the same
names, which Ray's metrics agent on each node exports on the node's Prometheus endpoint (its metrics
export port) with the prefix `ray_` and the Serve tags `application`, `deployment`, `replica`. Summed
over `replica` they are the whole service's figures, as `/metrics` through the Serve proxy reports them
(tests/deploy/test_replicas.py checks that both agree after 300 requests on 2 replicas).

Nothing is done per request: at each exchange with the metrics hub (`COE_METRICS_PUSH_S`) the replica
adds what its counters gained since the last one. Histogram buckets are replayed as observations at
each bucket's midpoint, so `ray_*_bucket` and `_count` are exact and `_sum` is approximate (the bucket
midpoints, not the observed values): read latency sums from `/metrics`. Ray exports what its agent
last received, so its figures lag `/metrics` by the agent's report interval (a few seconds)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("coe.metrics")

Labels = tuple[tuple[str, str], ...]
# a family of one replica's snapshot (deploy/pipeline/metrics.py Family)
Family = tuple[str, str, str, tuple[tuple[str, Labels, float], ...]]


def _midpoints(bounds: list[float]) -> list[float]:
    """A value inside each bucket (lo, hi]: its midpoint; past the last bound, twice that bound."""
    out, lo = [], 0.0
    for hi in bounds:
        out.append((lo + hi) / 2.0)
        lo = hi
    return [*out, 2.0 * lo if lo > 0 else 1.0]


class RayExport:
    """Mirrors one replica's snapshots into Ray metrics; `factory(kind, name, doc, tag_keys, bounds)`
    makes a Ray metric (tests pass a fake). Counters and histograms add their increase since the last
    push; gauges set their value."""

    def __init__(self, factory: Callable[..., Any] | None = None) -> None:
        self._factory = factory or ray_metric
        self._metrics: dict[str, Any] = {}
        self._last: dict[tuple[str, Labels], float] = {}
        self.error: str | None = None

    def push(self, snapshot: tuple[Family, ...]) -> None:
        try:
            for family in snapshot:
                self._family(*family)
            self.error = None
        except Exception as exc:  # Ray's metrics are an extra view: never fail the exchange for them
            self.error = f"{type(exc).__name__}: {exc}"[:200]
            log.debug("ray metrics export failed: %s", self.error)

    def _metric(self, kind: str, name: str, doc: str, tag_keys: tuple[str, ...], bounds: list[float]) -> Any:
        if name not in self._metrics:
            self._metrics[name] = self._factory(kind, name, doc, tag_keys, bounds)
        return self._metrics[name]

    def _increase(self, sample: str, labels: Labels, value: float) -> float:
        key = (sample, labels)
        delta = value - self._last.get(key, 0.0)
        self._last[key] = value
        return delta

    def _family(self, name: str, doc: str, typ: str, samples: tuple[tuple[str, Labels, float], ...]) -> None:
        if typ == "counter":
            for sample, labels, value in samples:
                if sample.endswith("_total") and (delta := self._increase(sample, labels, value)) > 0:
                    tags = dict(labels)
                    self._metric("counter", name, doc, tuple(tags), []).inc(delta, tags=tags or None)
        elif typ == "gauge":
            for _sample, labels, value in samples:
                tags = dict(labels)
                self._metric("gauge", name, doc, tuple(tags), []).set(value, tags=tags or None)
        elif typ == "histogram":
            self._histogram(name, doc, samples)

    def _histogram(self, name: str, doc: str, samples: tuple[tuple[str, Labels, float], ...]) -> None:
        # cumulative bucket counts by series (the labels without `le`), in the exporter's order
        series: dict[Labels, list[tuple[float, float]]] = {}
        for sample, labels, value in samples:
            if sample.endswith("_bucket"):
                rest = tuple(kv for kv in labels if kv[0] != "le")
                series.setdefault(rest, []).append((float(dict(labels)["le"]), value))
        for rest, buckets in series.items():
            buckets.sort()
            bounds = [b for b, _ in buckets if b != float("inf")]
            metric = self._metric("histogram", name, doc, tuple(k for k, _ in rest), bounds)
            tags = dict(rest) or None
            below = 0.0
            for (le, cumulative), mid in zip(buckets, _midpoints(bounds), strict=True):
                in_bucket = cumulative - below
                below = cumulative
                for _ in range(int(self._increase(f"{name}_bucket", (*rest, ("le", str(le))), in_bucket))):
                    metric.observe(mid, tags=tags)


def ray_metric(kind: str, name: str, doc: str, tag_keys: tuple[str, ...], bounds: list[float]) -> Any:
    """A `ray.serve.metrics` metric (Serve adds the application, deployment and replica tags)."""
    from ray.serve import metrics

    keys: Any = tag_keys  # Ray annotates tag_keys as tuple[str] but takes any number of keys
    if kind == "counter":
        return metrics.Counter(name, description=doc, tag_keys=keys)
    if kind == "gauge":
        return metrics.Gauge(name, description=doc, tag_keys=keys)
    return metrics.Histogram(name, description=doc, boundaries=bounds, tag_keys=keys)
