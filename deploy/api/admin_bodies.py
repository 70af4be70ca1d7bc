"""Request bodies of the admin API (`/admin/v1`): unknown fields are refused (400), field names are
those of `coe registry export` (registry/views.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from router.defaults import EXPERT_MAX_CONCURRENCY, EXPERT_MAX_CONTEXT, EXPERT_TIMEOUT_S


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpertCreate(_Body):
    """An expert, as `coe registry export` writes it."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    cost_input_per_m: float = 0.0
    cost_output_per_m: float = 0.0
    max_context: int = EXPERT_MAX_CONTEXT
    max_concurrency: int = EXPERT_MAX_CONCURRENCY
    timeout_s: float = EXPERT_TIMEOUT_S
    enabled: bool = True
    tags: list[str] = Field(default_factory=list)
    notes: str = ""
    capabilities: list[str] | str = Field(default_factory=list)


class ExpertUpdate(_Body):
    """The fields to change; absent fields stay as they are (`api_key_env: null` clears it)."""

    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    cost_input_per_m: float | None = None
    cost_output_per_m: float | None = None
    max_context: int | None = None
    max_concurrency: int | None = None
    timeout_s: float | None = None
    enabled: bool | None = None
    tags: list[str] | None = None
    notes: str | None = None
    capabilities: list[str] | str | None = None


class ProbeBody(_Body):
    timeout: float | None = Field(
        default=None, gt=0, description="seconds per request (default: the expert's)"
    )


class CategoryCreate(_Body):
    name: str
    description: str = ""


class CategoryUpdate(_Body):
    description: str


class MapBody(_Body):
    rank: int = Field(default=1, description="1 = first choice")


class SkillsBody(_Body):
    """Scores in [0, 1] by category, all with the same sample count and source."""

    scores: dict[str, float]
    n: int = 0
    source: str = ""
    create_categories: bool = False


class KeyCreate(_Body):
    scopes: list[str] = Field(description="query and/or admin")
    name: str = ""


class RouterDeployBody(_Body):
    path: str = Field(description="router artifact directory on the server")


class PlaygroundBody(_Body):
    text: str = Field(description="the query, as the user would send it")
    policies: list[str] | None = Field(default=None, description="default: every policy")
