"""Request bodies of the admin API (`/admin/v1`): unknown fields are refused (400), field names are
those of `coe registry export` (registry/views.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from registry.spec import ExpertSpec, update_model


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpertCreate(ExpertSpec):
    """An expert, as `coe registry export` writes it (registry/spec.py: names, types, defaults, bounds)."""


if TYPE_CHECKING:

    class ExpertUpdate(_Body):
        pass

else:
    #: the fields to change, those of ExpertSpec an update may change; absent fields stay as they are (null is
    #: refused except where the spec allows it: `api_key_env: null` clears it)
    ExpertUpdate = update_model("ExpertUpdate", _Body)


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
