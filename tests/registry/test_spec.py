"""registry/spec.py's ExpertSpec is the one description of an expert: every layer that carries an expert
exposes exactly its fields (the ORM columns, the record, router.types.ExpertInfo, the export file and the
import plan, the admin API's bodies, the CLI's options), with the spec's defaults, and a bad value is a
BadRequest naming the field."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect as sa_inspect

from deploy.api.admin_bodies import ExpertCreate, ExpertUpdate
from registry import Registry
from registry import repository as repo
from registry.cli.experts import build_experts_app
from registry.models import Expert
from registry.records import ExpertRecord
from registry.repository.import_plan import validate_document
from registry.repository.transfer import parse_document
from registry.spec import (
    EXPERT_FIELDS,
    REQUIRED,
    SPEC_FIELDS,
    UPDATABLE,
    ExpertSpec,
    defaults,
    expert_spec,
    flag,
    spec_update,
)
from router.errors import BadRequest
from router.types import ExpertInfo

OK = {"name": "a", "base_url": "http://h:1/v1", "model": "m"}


def test_the_orm_columns_are_the_spec_fields_with_its_defaults() -> None:
    columns = {c.key: c for c in sa_inspect(Expert).columns}
    assert set(SPEC_FIELDS) <= set(columns)
    assert set(columns) - set(SPEC_FIELDS) == {"id", "created_at", "updated_at"}
    for f, value in defaults().items():
        col = columns[f]
        if col.default is not None and not callable(col.default.arg):
            assert col.default.arg == value, f
        assert col.nullable == (f == "api_key_env"), f


def test_record_and_expert_info_carry_the_spec_fields_with_its_defaults() -> None:
    record = [f.name for f in dataclasses.fields(ExpertRecord)]
    assert record == [*SPEC_FIELDS, "created_at", "updated_at"]
    info = {f.name: f for f in dataclasses.fields(ExpertInfo)}
    assert list(info) == list(SPEC_FIELDS)
    for f, value in defaults().items():
        assert info[f].default == (tuple(value) if isinstance(value, list) else value), f


def test_the_admin_bodies_are_built_from_the_spec() -> None:
    assert list(ExpertCreate.model_fields) == list(SPEC_FIELDS)
    assert list(ExpertUpdate.model_fields) == list(UPDATABLE)
    assert set(UPDATABLE) == set(EXPERT_FIELDS)  # everything but the name may change
    create = ExpertCreate.model_json_schema()
    assert set(create["required"]) == set(REQUIRED) == {"name", "base_url", "model"}
    assert "required" not in ExpertUpdate.model_json_schema()
    assert create["properties"]["max_context"]["exclusiveMinimum"] == 0
    assert create["properties"]["cost_input_per_m"]["minimum"] == 0


def test_every_spec_field_has_a_cli_option() -> None:
    app = build_experts_app()
    runner = CliRunner()
    import typer.main

    group = typer.main.get_command(app)
    for command, fields in (("add", EXPERT_FIELDS), ("update", UPDATABLE)):
        params = {p.name: p for p in group.commands[command].params}  # type: ignore[attr-defined]
        for f in fields:
            assert f in params, (command, f)
            assert set(flag(f).flag.split("/")) <= set(params[f].opts + params[f].secondary_opts)
        assert runner.invoke(group, [command, "--help"]).exit_code == 0


def test_an_import_file_gets_the_spec_defaults() -> None:
    doc = validate_document(parse_document({"experts": [OK]}))
    assert dict(doc.experts["a"]) == {**defaults(), "base_url": "http://h:1/v1", "model": "m"}
    assert set(doc.experts["a"]) == set(EXPERT_FIELDS)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"tags": None}, "invalid tags None"),
        ({"tags": [1]}, "invalid tag 1"),
        ({"enabled": None}, "invalid enabled None"),
        ({"enabled": "yes"}, "invalid enabled"),
        ({"notes": None}, "invalid notes"),
        ({"max_context": "5"}, "positive integer"),
        ({"max_context": 1.5}, "positive integer"),
        ({"max_concurrency": True}, "positive integer"),
        ({"timeout_s": float("inf")}, "positive number"),
        ({"cost_input_per_m": -1}, "≥ 0"),
        ({"capabilities": None}, "capabilities"),
        ({"capabilities": ["teleport"]}, "unknown capabilities"),
        ({"base_url": None}, "invalid URL"),
        ({"model": None}, "invalid model"),
        ({"colour": "red"}, "unknown expert field 'colour'"),
    ],
)
def test_a_bad_value_is_a_bad_request_naming_the_field(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment) as info:
        expert_spec({**OK, **change})
    assert info.value.param == next(iter(change))
    with pytest.raises(BadRequest, match=fragment):
        spec_update(expert_spec(OK), change)


def test_values_are_normalised_once() -> None:
    spec = expert_spec({**OK, "base_url": " http://h:1/v1/ ", "tags": "x", "capabilities": "json, tools"})
    assert (spec.base_url, spec.tags, spec.capabilities) == ("http://h:1/v1", ["x"], ["json", "tools"])
    assert expert_spec({**OK, "api_key_env": ""}).api_key_env is None
    repeated = expert_spec({**OK, "capabilities": ["json,tools", "vision"]})
    assert repeated.capabilities == ["json", "tools", "vision"]
    with pytest.raises(BadRequest, match="name cannot be changed"):
        spec_update(expert_spec(OK), {"name": "b"})
    assert isinstance(spec_update(expert_spec(OK), {"api_key_env": None}), ExpertSpec)


def test_update_with_null_tags_is_refused_and_changes_nothing(db_url: str) -> None:
    with Registry(db_url) as reg:
        with reg.session() as s:
            repo.add_expert(s, **OK, tags=["x"])
        for change in ({"tags": None}, {"enabled": None}, {"notes": None}):
            with pytest.raises(BadRequest), reg.session() as s:
                repo.update_expert(s, name="a", **change)
        with reg.session(write=False) as s:
            rec = repo.get_expert(s, name="a")
        assert rec.tags == ("x",) and rec.enabled is True and rec.notes == ""
        with reg.session() as s:
            rec = repo.update_expert(s, name="a", tags=[], enabled=False)
        assert rec.tags == () and rec.enabled is False and rec.to_info().enabled is False


def test_the_cli_refuses_an_update_that_changes_nothing(db_url: str) -> None:
    import typer.main

    with Registry(db_url) as reg, reg.session() as s:
        repo.add_expert(s, **OK)
    group = typer.main.get_command(build_experts_app())
    r = CliRunner().invoke(group, ["update", "a"], env={"COE_DATABASE_URL": db_url, "COE_CONFIG": None})
    assert r.exit_code != 0 and isinstance(r.exception, BadRequest)
    assert "nothing to change" in str(r.exception)


def test_a_stored_value_the_spec_refuses_is_a_bad_request_on_update(db_url: str) -> None:
    from sqlalchemy import update

    with Registry(db_url) as reg:
        with reg.session() as s:
            repo.add_expert(s, **OK)
            s.execute(update(Expert).values(capabilities=["teleport"]))  # written past the spec
        with pytest.raises(BadRequest, match="unknown capabilities teleport"), reg.session() as s:
            repo.update_expert(s, name="a", notes="x")
        with reg.session() as s:
            assert repo.update_expert(s, name="a", notes="x", capabilities=[]).notes == "x"
