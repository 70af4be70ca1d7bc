"""The one description of an expert's fields: `ExpertSpec` (names, types, defaults, bounds, which fields an
update may change, the CLI flag of each). Everything else is built from it or checked against it: the
repository's add and update validate through it, the import plan fills a file's missing fields with its
defaults, the admin API's bodies are it (create) and its updatable fields made optional (update), the CLI's
`coe experts add|update` options are generated from it, and tests/registry/test_spec.py checks the ORM
columns, `ExpertRecord` and `router.types.ExpertInfo` against it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticUndefined

from registry.validation import (
    check_capabilities,
    check_env,
    check_name,
    check_tags,
    check_text,
    check_url,
)
from router.defaults import EXPERT_MAX_CONCURRENCY, EXPERT_MAX_CONTEXT, EXPERT_TIMEOUT_S
from router.errors import BadRequest
from router.types import CAPABILITIES

#: the pydantic error type of a failed registry/validation.py check
CHECK_FAILED = "invalid_value"


def _checked(check: Any, schema: Any = PydanticUndefined) -> BeforeValidator:
    """A pydantic validator running one of registry/validation.py's checks (their messages)."""

    def run(value: Any) -> Any:
        try:
            return check(value)
        except BadRequest as exc:  # its own message, without pydantic's "Value error, " in front
            raise PydanticCustomError(CHECK_FAILED, exc.message) from None

    return BeforeValidator(run, json_schema_input_type=schema)


def _tags(value: Any) -> list[str]:
    if not isinstance(value, str | list | tuple):
        raise BadRequest(f"invalid tags {value!r}: must be a list of names", param="tags")
    return list(check_tags(value))


def _capabilities(value: Any) -> list[str]:
    if isinstance(value, list | tuple):  # repeated CLI options may each carry a comma list
        value = ",".join(v if isinstance(v, str) else repr(v) for v in value)
    return list(check_capabilities(value))


@dataclass(frozen=True, slots=True)
class Flag:
    """A spec field's CLI option (or argument, without a leading --), its help, and whether an update
    may change the field; kept in the field's metadata, out of the JSON schema."""

    flag: str
    help: str
    update: bool = True


class ExpertSpec(BaseModel):
    """An expert, as the registry stores it and `coe registry export` writes it (besides its timestamps)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[
        str,
        _checked(lambda v: check_name(v, "expert name")),
        Flag("NAME", "Unique expert name.", update=False),
    ] = Field(description="unique expert name")
    base_url: Annotated[
        str, _checked(check_url), Flag("--url", "OpenAI-compatible base URL, e.g. http://host:8000/v1")
    ] = Field(description="OpenAI-compatible base URL")
    model: Annotated[
        str,
        _checked(lambda v: check_text(v, "model", empty=False)),
        Flag("--model", "Served model name sent in requests."),
    ] = Field(description="served model name")
    api_key_env: Annotated[
        str | None,
        _checked(check_env),
        Flag("--api-key-env", "NAME of the env var holding the API key ('' = none)."),
    ] = Field(
        default=None, description="NAME of the env var holding the API key, never the key; '' or null: none"
    )
    cost_input_per_m: Annotated[float, Flag("--cost-in", "USD per 1M prompt tokens.")] = Field(
        default=0.0, ge=0, allow_inf_nan=False
    )
    cost_output_per_m: Annotated[float, Flag("--cost-out", "USD per 1M completion tokens.")] = Field(
        default=0.0, ge=0, allow_inf_nan=False
    )
    max_context: Annotated[int, Flag("--max-context", "Context window in tokens.")] = Field(
        default=EXPERT_MAX_CONTEXT, gt=0
    )
    max_concurrency: Annotated[int, Flag("--max-concurrency", "Requests in flight at most.")] = Field(
        default=EXPERT_MAX_CONCURRENCY, gt=0
    )
    timeout_s: Annotated[float, Flag("--timeout", "Request timeout in seconds.")] = Field(
        default=EXPERT_TIMEOUT_S, gt=0, allow_inf_nan=False
    )
    enabled: Annotated[bool, Flag("--enabled/--disabled", "Enabled (routing uses it) or disabled.")] = True
    tags: Annotated[
        list[str],
        _checked(_tags, list[str] | str),
        Flag("--tag", "Tag (repeatable): generalist, aggregator, judge…"),
    ] = Field(default_factory=list)
    notes: Annotated[str, _checked(lambda v: check_text(v, "notes")), Flag("--notes", "Free text.")] = ""
    capabilities: Annotated[
        list[str],
        _checked(_capabilities, list[str] | str),
        Flag(
            "--capabilities",
            "What it serves beyond plain text chat: a comma list of " + ",".join(CAPABILITIES),
        ),
    ] = Field(
        default_factory=list, description="what it serves beyond plain text chat (a list or a comma list)"
    )


#: the spec's fields in the order of the export file, and those an update may change
SPEC_FIELDS: tuple[str, ...] = tuple(ExpertSpec.model_fields)
EXPERT_FIELDS: tuple[str, ...] = tuple(f for f in SPEC_FIELDS if f != "name")


def flag(name: str) -> Flag:
    """A spec field's CLI flag, help text and whether an update may change it."""
    return next(m for m in ExpertSpec.model_fields[name].metadata if isinstance(m, Flag))


REQUIRED: tuple[str, ...] = tuple(f for f, i in ExpertSpec.model_fields.items() if i.is_required())
UPDATABLE: tuple[str, ...] = tuple(f for f in SPEC_FIELDS if flag(f).update)


def _describe(info: FieldInfo) -> str:
    """What a numeric field must be, from its bounds."""
    kind = "integer" if info.annotation is int else "number"
    bounds = {type(m).__name__: m for m in info.metadata}
    if "Gt" in bounds and bounds["Gt"].gt == 0:
        return f"must be a positive {kind}"
    if "Ge" in bounds:
        return f"must be a{'n' if kind == 'integer' else ''} {kind} ≥ {bounds['Ge'].ge:g}"
    return f"must be {'an integer' if kind == 'integer' else 'a number'}"


def spec_error(exc: ValidationError, values: Mapping[str, Any]) -> BadRequest:
    """The first error of a spec validation as the BadRequest the CLI and the admin API show."""
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else ""
    value = values.get(field, err.get("input"))
    info = ExpertSpec.model_fields.get(field)
    if err["type"] == CHECK_FAILED:
        message = err["msg"]
    elif err["type"] == "missing":
        message = f"{field} is required"
    elif err["type"] == "extra_forbidden":
        message = f"unknown expert field {field!r}; known: {', '.join(SPEC_FIELDS)}"
    elif info is not None and info.annotation in (int, float):
        message = f"invalid {field} {value!r}: {_describe(info)}"
    else:
        message = f"invalid {field} {value!r}: {err['msg'].lower()}"
    return BadRequest(message, param=field or None)


def expert_spec(values: Mapping[str, Any]) -> ExpertSpec:
    """Validate a whole expert (missing optional fields take their defaults); BadRequest on a bad value."""
    try:
        return ExpertSpec.model_validate(dict(values))
    except ValidationError as exc:
        raise spec_error(exc, values) from None


def spec_update(current: ExpertSpec, changes: Mapping[str, Any]) -> ExpertSpec:
    """`current` with `changes` applied, validated; BadRequest names a field an update may not change."""
    for key in changes:
        if key in SPEC_FIELDS and key not in UPDATABLE:
            raise BadRequest(f"{key} cannot be changed", param=key)
    return expert_spec({**current.model_dump(), **changes})


def spec_values(obj: Any, fields: Iterable[str] = SPEC_FIELDS) -> dict[str, Any]:
    """The spec's fields of anything carrying them as attributes (an ORM row, a record), as plain values
    (lists, not tuples): the export file's entry."""
    return {f: list(v) if isinstance(v := getattr(obj, f), tuple | list) else v for f in fields}


def spec_of(obj: Any) -> ExpertSpec:
    """The spec of anything carrying the spec's fields as attributes (an ORM row, a record), taken as it is
    stored (not validated again: an update validates the whole result, `spec_update`)."""
    return ExpertSpec.model_construct(**spec_values(obj))


def update_model(name: str, base: type[BaseModel]) -> type[BaseModel]:
    """A model of the updatable fields, each optional (absent = unchanged), with the spec's types and
    checks: null is refused where the spec refuses it."""
    fields: dict[str, Any] = {}
    for f in UPDATABLE:
        info = ExpertSpec.model_fields[f]
        optional = FieldInfo.merge_field_infos(info, default=None, default_factory=None)
        fields[f] = (info.annotation, optional)
    model: type[BaseModel] = create_model(name, __base__=base, **fields)
    return model


def defaults() -> dict[str, Any]:
    """Every field's default (the required ones left out)."""
    return {
        f: i.get_default(call_default_factory=True)
        for f, i in ExpertSpec.model_fields.items()
        if not i.is_required()
    }
