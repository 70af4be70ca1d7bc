"""The result of an offline routing evaluation (`eval.routing.replay.evaluate_routing`), typed: the report
(eval/routing/report.py) and `coe eval routing` read it by attribute; `RoutingResult.to_dict()` is the JSON
that `coe eval routing --json` writes (docs/eval.md), field for field and in field order."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

#: a field left out of the JSON when it is None (instead of written as null)
_OMIT_NONE: dict[str, Any] = {"omit_none": True}


def to_plain(obj: Any) -> Any:
    """Dataclasses as dicts (field order), tuples as lists, recursively; the rest as it is."""
    if is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = to_plain(value)
        return out
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj


@dataclass(frozen=True)
class DatasetInfo:
    source: str
    n_train: int
    n_test: int
    models: tuple[str, ...]
    categories: list[str]
    cost_note: str
    # what `coe eval routing` read (set by the command, absent from a direct call's result)
    format: str | None = field(default=None, metadata=_OMIT_NONE)
    paths: list[str] | None = field(default=None, metadata=_OMIT_NONE)
    issues: list[str] | None = field(default=None, metadata=_OMIT_NONE)
    n_issues: int | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True)
class RunConfig:
    """The evaluation settings that shape the numbers (eval.routing.replay.RoutingEvalConfig, as reported)."""

    policies: list[str]
    train_split: float
    seed: int
    multi: str
    classifier_kind: str
    knn_k: list[int]
    heads: list[str]


@dataclass(frozen=True)
class Reference:
    """The test part's anchors: weak = the cheapest model, strong = the best mean quality."""

    weak: str
    strong: str
    weak_point: tuple[float, float]  # (mean cost, mean quality)
    strong_point: tuple[float, float]
    cost_range: tuple[float, float]  # cheapest and dearest model's mean cost


@dataclass(frozen=True)
class ClassifierResult:
    """The category router's confusion matrix on the test queries (rows: true, columns: predicted)."""

    labels: list[str]
    confusion: list[list[int]]
    accuracy: float
    kind: str


@dataclass(frozen=True)
class DefaultPoint:
    """A policy at its default knob: what it costs, how good it is, which models it called (share)."""

    knob: float
    cost: float
    quality: float
    chosen: dict[str, float]


@dataclass(frozen=True)
class PolicyResult:
    """One policy's knob sweep on the test queries, and its summary metrics (eval/routing/metrics.py)."""

    knob: str  # the knob's name ("threshold", "k", ...)
    apgr: float | None
    aiq: float | None
    cpt50: float | None
    cpt80: float | None
    cost_to_pgr50: float | None
    cost_to_pgr80: float | None
    quality_at_20pct_strong_cost: float | None
    curve: list[list[float]]  # [cost, quality] per knob value
    knobs: list[float]
    strong_share: list[float]
    pareto: list[list[float]]
    strong_share_to_95: float | None
    cost_to_95: float | None
    default: DefaultPoint | None = field(default=None, metadata=_OMIT_NONE)
    policy: str = ""  # the service policy this run used
    quality_head: str | None = None  # the quality head method it used, if any


@dataclass(frozen=True)
class PointSummary:
    """A single operating point (a baseline): cost, quality, strong-model share, APGR and AIQ."""

    cost: float
    quality: float
    strong_share: float
    apgr: float | None
    aiq: float | None


@dataclass(frozen=True)
class BestSingle(PointSummary):
    model: str = ""  # the best single model on the training part


@dataclass(frozen=True)
class RandomMix:
    """Random mixing of the weak and the strong model: a straight line, APGR 0.5."""

    curve: list[list[float]]
    apgr: float | None
    aiq: float | None


@dataclass(frozen=True)
class Baselines:
    oracle: PointSummary
    best_single: BestSingle
    random: RandomMix
    single: dict[str, PointSummary]  # model -> that model alone


@dataclass(frozen=True)
class QualityHeadChoice:
    chosen: str | None
    chosen_by: str
    validation: dict[str, Any]


@dataclass(frozen=True)
class RouterCell:
    quality: float
    cost: float


@dataclass(frozen=True)
class CategoryRow:
    """One category of the test part: each model's mean quality and each router's at its default knob."""

    n: int
    models: dict[str, float]
    routers: dict[str, RouterCell]


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    cost: float
    quality: float


@dataclass(frozen=True)
class SkillProfile:
    """Per-model per-category mean quality on the training part (`coe experts profile --from-eval`)."""

    scores: dict[str, dict[str, float]]
    n: dict[str, int]
    measured_on: str = "train"


@dataclass(frozen=True)
class RoutingResult:
    dataset: DatasetInfo
    config: RunConfig
    reference: Reference
    policies: dict[str, PolicyResult]  # report label ("quality@knn", ...) -> its sweep
    baselines: Baselines
    classifier: ClassifierResult
    quality_head: QualityHeadChoice | None = field(default=None, metadata=_OMIT_NONE)
    categories: dict[str, CategoryRow] = field(default_factory=dict)
    pareto: list[ParetoPoint] = field(default_factory=list)
    skills: SkillProfile = field(default_factory=lambda: SkillProfile({}, {}))
    chosen_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # router -> model -> queries

    def with_input(self, fmt: str, paths: list[str], issues: list[str], n_issues: int) -> RoutingResult:
        """This result with what the command read recorded in `dataset`."""
        ds = replace(self.dataset, format=fmt, paths=paths, issues=issues, n_issues=n_issues)
        return replace(self, dataset=ds)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able result (`coe eval routing --json`)."""
        out: dict[str, Any] = to_plain(self)
        return out
