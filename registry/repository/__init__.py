"""Repository functions of the registry: keyword-only, take a Session, return plain records, validate
their inputs and raise the typed errors of router/errors.py. The admin CLI and the service share them
(`from registry import repository as repo; repo.add_expert(s, ...)`); one module per noun:

    experts.py      add / update / enable / remove / read experts
    categories.py   categories and their ranked experts (map / unmap)
    skills.py       measured skill scores
    settings.py     named JSON settings
    keys.py         API keys (salted PBKDF2 hashes, scopes, revocation)
    responses.py    stored Responses API responses (runtime data: no revision bump)
    affinity.py     session affinity, continuation key -> expert (runtime data: no revision bump)
    snapshot.py     the immutable RegistrySnapshot the router reads
    transfer.py     export / import of the whole registry (import_plan.py: the pure plan of an import)
    base.py         the revision row, flush → Conflict, UNSET; validation.py: the value checks

Every change first bumps the single `registry_revision` row, in the same transaction: on PostgreSQL
that row lock serialises writers; on SQLite the write transaction already holds the database lock
(BEGIN IMMEDIATE, see registry.db). For a read-modify-write across several calls, use
`Registry.session()`, which takes the lock before the first read (`lock_for_write`)."""

from __future__ import annotations

from registry.repository.affinity import (
    MAX_KEYS,
    affinity_expert,
    purge_expired_affinity,
    remember_affinity,
)
from registry.repository.base import UNSET, Unset, current_revision, lock_for_write
from registry.repository.categories import (
    add_category,
    get_category,
    list_categories,
    map_expert,
    remove_category,
    unmap_expert,
    update_category,
)
from registry.repository.experts import (
    EXPERT_FIELDS,
    add_expert,
    get_expert,
    list_experts,
    remove_expert,
    set_expert_enabled,
    update_expert,
)
from registry.repository.keys import (
    KEY_RE,
    PBKDF2_ITERATIONS,
    check_scopes,
    create_api_key,
    has_api_keys,
    list_api_keys,
    revoke_api_key,
    verify_api_key,
)
from registry.repository.responses import (
    MAX_CHAIN,
    delete_response,
    get_response,
    purge_expired_responses,
    put_response,
    response_history,
)
from registry.repository.settings import get_setting, list_settings, set_setting
from registry.repository.skills import list_skill_scores, set_skill_scores
from registry.repository.snapshot import load_snapshot
from registry.repository.transfer import EXPORT_VERSION, export_registry, import_registry
from registry.validation import (
    CATEGORY_NAME_RE,
    ENV_RE,
    NAME_RE,
    check_category_name,
    check_name,
    check_url,
)

__all__ = [
    "CATEGORY_NAME_RE",
    "ENV_RE",
    "EXPERT_FIELDS",
    "EXPORT_VERSION",
    "KEY_RE",
    "MAX_CHAIN",
    "MAX_KEYS",
    "NAME_RE",
    "PBKDF2_ITERATIONS",
    "UNSET",
    "Unset",
    "add_category",
    "add_expert",
    "affinity_expert",
    "check_category_name",
    "check_name",
    "check_scopes",
    "check_url",
    "create_api_key",
    "current_revision",
    "delete_response",
    "export_registry",
    "get_category",
    "get_expert",
    "get_response",
    "get_setting",
    "has_api_keys",
    "import_registry",
    "list_api_keys",
    "list_categories",
    "list_experts",
    "list_settings",
    "list_skill_scores",
    "load_snapshot",
    "lock_for_write",
    "map_expert",
    "purge_expired_affinity",
    "purge_expired_responses",
    "put_response",
    "remember_affinity",
    "remove_category",
    "remove_expert",
    "response_history",
    "revoke_api_key",
    "set_expert_enabled",
    "set_setting",
    "set_skill_scores",
    "unmap_expert",
    "update_category",
    "update_expert",
    "verify_api_key",
]
