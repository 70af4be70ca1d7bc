"""Schemathesis over the admin API (/admin/v1) with an admin key, in process (ASGI), on a throw-away SQLite
registry that the examples change as they go (experts, categories, keys, imports): no answer is a 5xx, and
each conforms to the document's status codes, content types, headers and schemas; schema-violating
requests are refused. ("Schema-valid data is accepted" is off: an admin request that fits the schema is
still a 404 for an unknown name or a 409 for a duplicate, which the registry's state decides.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from deploy.pipeline.ingress import Ingress
from deploy.settings import Settings
from registry import Registry
from registry import repository as repo
from registry.records import ADMIN_SCOPE
from tests.deploy.doubles import FakeGateway, FakeRouter
from tests.deploy.test_fuzz_api import CHECKS, EXAMPLES

#: the public API's checks (tests/deploy/test_fuzz_api.py) but "schema-valid data is accepted" (above)
ADMIN_CHECKS = [c for c in CHECKS if c is not checks.positive_data_acceptance]
#: where "schema-violating requests are refused" cannot hold: the import body is a registry file's text,
#: which the document states as a string for YAML (an object written as YAML is a valid file); a query
#: parameter given several times is taken once (the last), as FastAPI does, though the schema says string
LOOSE_NEGATIVE = {"/admin/v1/registry/import", "/admin/v1/skills"}
#: the throw-away registry, one per test session (the app is built once, at collection)
DB = Path(os.environ.get("TMPDIR", "/tmp")) / f"coe-admin-fuzz-{os.getpid()}.db"


def build_app() -> tuple[Any, str]:
    DB.unlink(missing_ok=True)
    registry = Registry(f"sqlite:///{DB}")
    with registry.session() as s:
        _, key = repo.create_api_key(s, scopes=[ADMIN_SCOPE], name="fuzz")
        repo.add_expert(s, name="e1", base_url="http://127.0.0.1:9/v1", model="m", timeout_s=1)
        repo.add_category(s, name="math")
    config = Settings(
        database_url=registry.url, data_dir=DB.parent, registry_poll_s=60, max_prompt_chars=2000
    )
    app = Ingress(config, FakeRouter(), FakeGateway(), registry=registry, key_ttl_s=0).build_asgi_app()
    return app, key


APP, KEY = build_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).include(path_regex="^/admin/v1/")


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_admin_operation_conforms_and_never_fails(case: Any) -> None:
    # the document requires the key: where the example carries one it becomes the real admin key; an
    # example without one (a negative case) must be refused
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    if len(headers) < len(case.headers or {}):
        headers["authorization"] = f"Bearer {KEY}"
    case.headers = headers
    loose = case.operation.path in LOOSE_NEGATIVE
    case.call_and_validate(
        checks=[c for c in ADMIN_CHECKS if not (loose and c is checks.negative_data_rejection)]
    )


def test_the_admin_document_covers_the_expert_routes() -> None:
    paths = set(schema.raw_schema["paths"])
    assert {"/admin/v1/experts", "/admin/v1/experts/{name}", "/admin/v1/registry/import"} <= paths


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
