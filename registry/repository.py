"""Repository functions of the registry: keyword-only, take a Session, return plain records, validate
their inputs and raise the typed errors of router/errors.py. The admin CLI and the service share them.

Every change first bumps the single `registry_revision` row, in the same transaction: on PostgreSQL
that row lock serialises writers; on SQLite the write transaction already holds the database lock
(BEGIN IMMEDIATE, see registry.db). For a read-modify-write across several calls, use
`Registry.session()`, which takes the lock before the first read (`lock_for_write`)."""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.models import (
    ApiKey,
    Category,
    CategoryExpert,
    Expert,
    RegistryRevision,
    Setting,
    SkillScore,
    utcnow,
)
from registry.records import (
    SCOPES,
    ApiKeyRecord,
    CategoryRecord,
    ExpertRecord,
    ImportSummary,
    SkillScoreRecord,
)
from router.errors import BadRequest, Conflict, NotFound, RegistryUnavailable
from router.types import RegistrySnapshot, parse_capabilities

NAME_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
KEY_RE = re.compile(r"^coe_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")
PBKDF2_ITERATIONS = 120_000
EXPORT_VERSION = 1


class _Unset(enum.Enum):
    UNSET = "UNSET"


UNSET = _Unset.UNSET


# --- validation ---------------------------------------------------------------------------------------


def check_name(value: Any, what: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise BadRequest(
            f"invalid {what} {value!r}: use 1-128 characters from A-Z a-z 0-9 . _ : -", param=what
        )
    return value


#: category names come from router artifacts (MMLU-Pro has "computer science"): inner spaces allowed
CATEGORY_NAME_RE = re.compile(r"^[A-Za-z0-9._:-](?:[A-Za-z0-9._: -]{0,126}[A-Za-z0-9._:-])?$")


def check_category_name(value: Any) -> str:
    if not isinstance(value, str) or not CATEGORY_NAME_RE.match(value):
        raise BadRequest(
            f"invalid category name {value!r}: use 1-128 characters from A-Z a-z 0-9 . _ : - "
            "and inner spaces",
            param="category name",
        )
    return value


def check_url(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"invalid URL {value!r}", param="base_url")
    try:
        parts = urlsplit(value.strip())
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise BadRequest(f"invalid URL {value!r}: need http(s)://host[:port][/path]", param="base_url")
    return value.strip().rstrip("/")


def _check_cost(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise BadRequest(f"invalid {what} {value!r}: must be a number ≥ 0", param=what)
    return float(value)


def _check_pos_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadRequest(f"invalid {what} {value!r}: must be a positive integer", param=what)
    return value


def _check_pos_float(value: Any, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise BadRequest(f"invalid {what} {value!r}: must be a positive number", param=what)
    return float(value)


def _check_env(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not ENV_RE.match(value):
        raise BadRequest(
            f"invalid api_key_env {value!r}: give the NAME of an environment variable (e.g. OPENAI_API_KEY), "
            "never the key itself",
            param="api_key_env",
        )
    return value


def _check_text(value: Any, what: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise BadRequest(f"invalid {what} {value!r}", param=what)
    return value


def _check_capabilities(values: Any) -> tuple[str, ...]:
    if not isinstance(values, str | list | tuple):
        raise BadRequest("capabilities must be a list or a comma list", param="capabilities")
    try:
        return parse_capabilities(values)
    except ValueError as exc:
        raise BadRequest(str(exc), param="capabilities") from None


def _check_tags(values: Iterable[Any]) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        check_name(v, "tag")
        if v not in out:
            out.append(v)
    return tuple(out)


def check_scopes(values: Iterable[Any]) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(values))
    if not scopes:
        raise BadRequest(f"an API key needs at least one scope ({', '.join(SCOPES)})", param="scope")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise BadRequest(f"unknown scope {unknown[0]!r}: choose from {', '.join(SCOPES)}", param="scope")
    return tuple(s for s in SCOPES if s in scopes)


def _check_json(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"{what} must be JSON-serialisable: {exc}", param=what) from None


def _aware(ts: datetime | None) -> datetime | None:
    if ts is not None and ts.tzinfo is None:  # SQLite keeps no zone; we always store UTC
        return ts.replace(tzinfo=UTC)
    return ts


# --- revision -----------------------------------------------------------------------------------------


def current_revision(session: Session) -> int:
    """The registry revision: one primary-key lookup."""
    rev = session.execute(select(RegistryRevision.revision).where(RegistryRevision.id == 1)).scalar()
    if rev is None:
        raise RegistryUnavailable("registry schema is incomplete: the revision row is missing")
    return int(rev)


def lock_for_write(session: Session) -> None:
    """Take the writers' lock now (PostgreSQL: row lock on the revision row, held until commit), so that
    reads that come before the first change of a transaction already see the latest committed state."""
    session.execute(
        select(RegistryRevision.revision).where(RegistryRevision.id == 1).with_for_update()
    ).scalar()


def _bump(session: Session) -> int:
    """Bump the revision first thing in a change: it takes the writers' lock until commit."""
    table: Any = RegistryRevision.__table__
    rev = session.execute(
        update(table)
        .where(table.c.id == 1)
        .values(revision=table.c.revision + 1, updated_at=utcnow())
        .returning(table.c.revision)
    ).scalar()
    if rev is None:
        raise RegistryUnavailable("registry schema is incomplete: the revision row is missing")
    return int(rev)


def _flush(session: Session, what: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"{what} conflicts with an existing entry: {str(exc.orig).splitlines()[0]}") from None


# --- experts ------------------------------------------------------------------------------------------


def _expert_record(e: Expert) -> ExpertRecord:
    return ExpertRecord(
        name=e.name,
        base_url=e.base_url,
        model=e.model,
        api_key_env=e.api_key_env,
        cost_input_per_m=e.cost_input_per_m,
        cost_output_per_m=e.cost_output_per_m,
        max_context=e.max_context,
        max_concurrency=e.max_concurrency,
        timeout_s=e.timeout_s,
        enabled=e.enabled,
        tags=tuple(e.tags or ()),
        notes=e.notes or "",
        capabilities=tuple(e.capabilities or ()),
        created_at=_aware(e.created_at),  # type: ignore[arg-type]
        updated_at=_aware(e.updated_at),  # type: ignore[arg-type]
    )


def _get_expert_row(session: Session, name: str) -> Expert:
    row = session.execute(select(Expert).where(Expert.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"unknown expert {name!r}", param="expert")
    return row


def _expert_fields(**kw: Any) -> dict[str, Any]:
    """Validate the expert fields that are set (not UNSET)."""
    checks = {
        "base_url": check_url,
        "model": lambda v: _check_text(v, "model", empty=False),
        "api_key_env": _check_env,
        "cost_input_per_m": lambda v: _check_cost(v, "cost_input_per_m"),
        "cost_output_per_m": lambda v: _check_cost(v, "cost_output_per_m"),
        "max_context": lambda v: _check_pos_int(v, "max_context"),
        "max_concurrency": lambda v: _check_pos_int(v, "max_concurrency"),
        "timeout_s": lambda v: _check_pos_float(v, "timeout_s"),
        "enabled": lambda v: bool(v),
        "tags": lambda v: list(_check_tags(v)),
        "notes": lambda v: _check_text(v, "notes"),
        "capabilities": lambda v: list(_check_capabilities(v)),
    }
    return {k: checks[k](v) for k, v in kw.items() if v is not UNSET}


def add_expert(
    session: Session,
    *,
    name: str,
    base_url: str,
    model: str,
    api_key_env: str | None = None,
    cost_input_per_m: float = 0.0,
    cost_output_per_m: float = 0.0,
    max_context: int = 4096,
    max_concurrency: int = 16,
    timeout_s: float = 60.0,
    enabled: bool = True,
    tags: Sequence[str] = (),
    notes: str = "",
    capabilities: Sequence[str] = (),
) -> ExpertRecord:
    check_name(name, "expert name")
    fields = _expert_fields(
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        cost_input_per_m=cost_input_per_m,
        cost_output_per_m=cost_output_per_m,
        max_context=max_context,
        max_concurrency=max_concurrency,
        timeout_s=timeout_s,
        enabled=enabled,
        tags=tags,
        notes=notes,
        capabilities=capabilities,
    )
    _bump(session)
    if session.execute(select(Expert.id).where(Expert.name == name)).first() is not None:
        raise Conflict(f"expert {name!r} already exists", param="name")
    now = utcnow()
    row = Expert(name=name, created_at=now, updated_at=now, **fields)
    session.add(row)
    _flush(session, f"expert {name!r}")
    return _expert_record(row)


def update_expert(
    session: Session,
    *,
    name: str,
    base_url: str | _Unset = UNSET,
    model: str | _Unset = UNSET,
    api_key_env: str | None | _Unset = UNSET,
    cost_input_per_m: float | _Unset = UNSET,
    cost_output_per_m: float | _Unset = UNSET,
    max_context: int | _Unset = UNSET,
    max_concurrency: int | _Unset = UNSET,
    timeout_s: float | _Unset = UNSET,
    enabled: bool | _Unset = UNSET,
    tags: Sequence[str] | _Unset = UNSET,
    notes: str | _Unset = UNSET,
    capabilities: Sequence[str] | _Unset = UNSET,
) -> ExpertRecord:
    """Change the given fields of an expert (UNSET leaves a field as it is)."""
    fields = _expert_fields(
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        cost_input_per_m=cost_input_per_m,
        cost_output_per_m=cost_output_per_m,
        max_context=max_context,
        max_concurrency=max_concurrency,
        timeout_s=timeout_s,
        enabled=enabled,
        tags=tags,
        notes=notes,
        capabilities=capabilities,
    )
    _bump(session)
    row = _get_expert_row(session, name)
    for key, value in fields.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    _flush(session, f"expert {name!r}")
    return _expert_record(row)


def set_expert_enabled(session: Session, *, name: str, enabled: bool) -> ExpertRecord:
    return update_expert(session, name=name, enabled=enabled)


def remove_expert(session: Session, *, name: str) -> None:
    """Remove an expert with its category mappings and skill scores."""
    _bump(session)
    row = _get_expert_row(session, name)
    session.execute(delete(CategoryExpert).where(CategoryExpert.expert_id == row.id))
    session.execute(delete(SkillScore).where(SkillScore.expert_id == row.id))
    session.delete(row)
    session.flush()


def get_expert(session: Session, *, name: str) -> ExpertRecord:
    return _expert_record(_get_expert_row(session, name))


def list_experts(session: Session, *, enabled: bool | None = None) -> list[ExpertRecord]:
    stmt = select(Expert).order_by(Expert.name)
    if enabled is not None:
        stmt = stmt.where(Expert.enabled == enabled)
    return [_expert_record(e) for e in session.execute(stmt).scalars()]


# --- categories ---------------------------------------------------------------------------------------


def _get_category_row(session: Session, name: str) -> Category:
    row = session.execute(select(Category).where(Category.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"unknown category {name!r}", param="category")
    return row


def _category_experts(session: Session) -> dict[int, list[tuple[str, int]]]:
    rows = session.execute(
        select(CategoryExpert.category_id, Expert.name, CategoryExpert.rank)
        .join(Expert, Expert.id == CategoryExpert.expert_id)
        .order_by(CategoryExpert.category_id, CategoryExpert.rank, Expert.name)
    )
    out: dict[int, list[tuple[str, int]]] = {}
    for cid, ename, rank in rows:
        out.setdefault(cid, []).append((ename, rank))
    return out


def add_category(session: Session, *, name: str, description: str = "") -> CategoryRecord:
    check_category_name(name)
    _check_text(description, "description")
    _bump(session)
    if session.execute(select(Category.id).where(Category.name == name)).first() is not None:
        raise Conflict(f"category {name!r} already exists", param="name")
    row = Category(name=name, description=description, created_at=utcnow())
    session.add(row)
    _flush(session, f"category {name!r}")
    return CategoryRecord(name=name, description=description, created_at=_aware(row.created_at))


def update_category(session: Session, *, name: str, description: str) -> CategoryRecord:
    _check_text(description, "description")
    _bump(session)
    row = _get_category_row(session, name)
    row.description = description
    session.flush()
    return get_category(session, name=name)


def remove_category(session: Session, *, name: str) -> None:
    _bump(session)
    row = _get_category_row(session, name)
    session.execute(delete(CategoryExpert).where(CategoryExpert.category_id == row.id))
    session.execute(delete(SkillScore).where(SkillScore.category_id == row.id))
    session.delete(row)
    session.flush()


def get_category(session: Session, *, name: str) -> CategoryRecord:
    row = _get_category_row(session, name)
    experts = _category_experts(session).get(row.id, [])
    return CategoryRecord(
        name=row.name, description=row.description, experts=tuple(experts), created_at=_aware(row.created_at)
    )


def list_categories(session: Session) -> list[CategoryRecord]:
    mapping = _category_experts(session)
    rows = session.execute(select(Category).order_by(Category.name)).scalars()
    return [
        CategoryRecord(
            name=c.name,
            description=c.description,
            experts=tuple(mapping.get(c.id, [])),
            created_at=_aware(c.created_at),
        )
        for c in rows
    ]


def map_expert(session: Session, *, category: str, expert: str, rank: int = 1) -> CategoryRecord:
    """Map an expert to a category with a rank (1 = first choice); re-mapping changes the rank."""
    _check_pos_int(rank, "rank")
    _bump(session)
    cat = _get_category_row(session, category)
    exp = _get_expert_row(session, expert)
    link = session.get(CategoryExpert, (cat.id, exp.id))
    if link is None:
        session.add(CategoryExpert(category_id=cat.id, expert_id=exp.id, rank=rank))
    else:
        link.rank = rank
    _flush(session, f"mapping {category!r} -> {expert!r}")
    return get_category(session, name=category)


def unmap_expert(session: Session, *, category: str, expert: str) -> CategoryRecord:
    _bump(session)
    cat = _get_category_row(session, category)
    exp = _get_expert_row(session, expert)
    link = session.get(CategoryExpert, (cat.id, exp.id))
    if link is None:
        raise NotFound(f"expert {expert!r} is not mapped to category {category!r}")
    session.delete(link)
    session.flush()
    return get_category(session, name=category)


# --- skill scores -------------------------------------------------------------------------------------


def _check_score(score: Any, n: Any, source: Any) -> tuple[float, int, str]:
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
        raise BadRequest(f"invalid skill score {score!r}: must be in [0, 1]", param="score")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise BadRequest(f"invalid sample count {n!r}: must be an integer ≥ 0", param="n")
    return float(score), n, _check_text(source, "source")


def _upsert_skill(
    session: Session, expert_id: int, category_id: int, score: float, n: int, source: str
) -> bool:
    row = session.get(SkillScore, (expert_id, category_id))
    if row is None:
        session.add(
            SkillScore(
                expert_id=expert_id,
                category_id=category_id,
                score=score,
                n=n,
                source=source,
                updated_at=utcnow(),
            )
        )
        return True
    row.score, row.n, row.source, row.updated_at = score, n, source, utcnow()
    return False


def set_skill_scores(
    session: Session,
    *,
    expert: str,
    category: str | None = None,
    score: float | None = None,
    n: int = 0,
    source: str = "",
    scores: Mapping[str, float] | None = None,
    create_categories: bool = False,
) -> int:
    """Set an expert's measured skill on one category (`category=`, `score=`) or on several at once
    (`scores={category: score}`), all with the same `n` and `source`. Unknown categories are NotFound
    unless `create_categories`. Returns the new revision."""
    items = dict(scores or {})
    if category is not None:
        if score is None:
            raise BadRequest("set_skill_scores needs score= with category=", param="score")
        items[category] = score
    if not items:
        raise BadRequest("set_skill_scores needs category= and score=, or scores=", param="scores")
    checked = {check_category_name(c): _check_score(s, n, source) for c, s in items.items()}
    revision = _bump(session)
    exp = _get_expert_row(session, expert)
    for cat_name, (s, cnt, src) in checked.items():
        cat = session.execute(select(Category).where(Category.name == cat_name)).scalar_one_or_none()
        if cat is None:
            if not create_categories:
                raise NotFound(f"unknown category {cat_name!r}", param="category")
            cat = Category(name=cat_name, description="", created_at=utcnow())
            session.add(cat)
            session.flush()
        _upsert_skill(session, exp.id, cat.id, s, cnt, src)
    _flush(session, f"skill scores of {expert!r}")
    return revision


def list_skill_scores(session: Session, *, expert: str | None = None) -> list[SkillScoreRecord]:
    stmt = (
        select(
            Expert.name,
            Category.name,
            SkillScore.score,
            SkillScore.n,
            SkillScore.source,
            SkillScore.updated_at,
        )
        .join(Expert, Expert.id == SkillScore.expert_id)
        .join(Category, Category.id == SkillScore.category_id)
        .order_by(Expert.name, Category.name)
    )
    if expert is not None:
        stmt = stmt.where(Expert.name == expert)
    return [
        SkillScoreRecord(expert=e, category=c, score=s, n=n, source=src, updated_at=_aware(ts))  # type: ignore[arg-type]
        for e, c, s, n, src, ts in session.execute(stmt)
    ]


# --- settings -----------------------------------------------------------------------------------------


def get_setting(session: Session, *, key: str, default: Any = None) -> Any:
    row = session.get(Setting, key)
    return default if row is None else row.value


def set_setting(session: Session, *, key: str, value: Any) -> int:
    """Set a setting (any JSON value); returns the new revision, so a router hot-swap is one change."""
    check_name(key, "setting key")
    value = _check_json(value, key)
    revision = _bump(session)
    row = session.get(Setting, key)
    if row is None:
        session.add(Setting(key=key, value=value, updated_at=utcnow()))
    else:
        row.value, row.updated_at = value, utcnow()
    session.flush()
    return revision


def delete_setting(session: Session, *, key: str) -> None:
    _bump(session)
    row = session.get(Setting, key)
    if row is None:
        raise NotFound(f"unknown setting {key!r}")
    session.delete(row)
    session.flush()


def list_settings(session: Session) -> dict[str, Any]:
    return {s.key: s.value for s in session.execute(select(Setting).order_by(Setting.key)).scalars()}


# --- API keys -----------------------------------------------------------------------------------------


def _hash_secret(secret: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)


def _key_record(k: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=k.id,
        name=k.name,
        scopes=tuple(k.scopes),
        created_at=_aware(k.created_at),  # type: ignore[arg-type]
        revoked_at=_aware(k.revoked_at),
        rpm=k.rpm,
        tpm=k.tpm,
        budget_usd=k.budget_usd,
        budget_period=k.budget_period or "month",
    )


def create_api_key(session: Session, *, scopes: Iterable[str], name: str = "") -> tuple[ApiKeyRecord, str]:
    """Create a key; returns its record and the plaintext, which is never stored and shown only now."""
    checked = check_scopes(scopes)
    if name:
        check_name(name, "key name")
    _bump(session)
    key_id = secrets.token_hex(6)
    while session.get(ApiKey, key_id) is not None:  # pragma: no cover - 48 random bits
        key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    digest = _hash_secret(secret, salt, PBKDF2_ITERATIONS)
    row = ApiKey(
        id=key_id,
        name=name,
        scopes=list(checked),
        created_at=utcnow(),
        key_hash=f"pbkdf2_sha256${PBKDF2_ITERATIONS}${salt.hex()}${digest.hex()}",
    )
    session.add(row)
    _flush(session, "API key")
    return _key_record(row), f"coe_{key_id}_{secret}"


def list_api_keys(session: Session, *, include_revoked: bool = True) -> list[ApiKeyRecord]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return [_key_record(k) for k in session.execute(stmt).scalars()]


def revoke_api_key(session: Session, *, key_id: str) -> ApiKeyRecord:
    _bump(session)
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"unknown API key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.flush()
    return _key_record(row)


def verify_api_key(session: Session, *, plaintext: str) -> ApiKeyRecord | None:
    """The active key matching `plaintext`, or None (constant-time comparison of salted hashes)."""
    m = KEY_RE.match(plaintext.strip()) if isinstance(plaintext, str) else None
    if m is None:
        return None
    row = session.get(ApiKey, m.group(1))
    if row is None or row.revoked_at is not None:
        return None
    try:
        algo, iterations, salt_hex, digest_hex = row.key_hash.split("$")
        ok = algo == "pbkdf2_sha256" and hmac.compare_digest(
            _hash_secret(m.group(2), bytes.fromhex(salt_hex), int(iterations)), bytes.fromhex(digest_hex)
        )
    except ValueError:
        return None
    return _key_record(row) if ok else None


def has_api_keys(session: Session) -> bool:
    """Whether any API key was ever created (revoked ones count: revoking every key must not open the
    service to anonymous use)."""
    return session.execute(select(func.count()).select_from(ApiKey)).scalar_one() > 0


# --- snapshot -----------------------------------------------------------------------------------------


def load_snapshot(session: Session) -> RegistrySnapshot:
    """The registry at its current revision. `experts` holds every expert (with `.enabled`);
    `category_experts` and `skills` leave disabled experts out, so policies never pick them."""
    revision = current_revision(session)  # first: a concurrent change then shows up as a newer revision
    experts = {e.name: e.to_info() for e in list_experts(session)}
    category_experts = {
        c.name: tuple(n for n, _ in c.experts if experts[n].enabled) for c in list_categories(session)
    }
    skills: dict[str, dict[str, float]] = {}
    for s in list_skill_scores(session):
        if experts[s.expert].enabled:
            skills.setdefault(s.expert, {})[s.category] = s.score
    return RegistrySnapshot(
        revision=revision, experts=experts, category_experts=category_experts, skills=skills
    )


# --- export / import ----------------------------------------------------------------------------------

EXPERT_FIELDS = (
    "base_url",
    "model",
    "api_key_env",
    "cost_input_per_m",
    "cost_output_per_m",
    "max_context",
    "max_concurrency",
    "timeout_s",
    "enabled",
    "tags",
    "notes",
    "capabilities",
)


def export_registry(session: Session) -> dict[str, Any]:
    """The registry as a plain dict (no timestamps, no revision, no API keys): the YAML file format."""
    experts = []
    for e in list_experts(session):
        d: dict[str, Any] = {"name": e.name}
        for f in EXPERT_FIELDS:
            v = getattr(e, f)
            d[f] = list(v) if f in ("tags", "capabilities") else v
        experts.append(d)
    categories = [
        {
            "name": c.name,
            "description": c.description,
            "experts": [{"expert": n, "rank": r} for n, r in c.experts],
        }
        for c in list_categories(session)
    ]
    skills = [
        {"expert": s.expert, "category": s.category, "score": s.score, "n": s.n, "source": s.source}
        for s in list_skill_scores(session)
    ]
    return {
        "version": EXPORT_VERSION,
        "experts": experts,
        "categories": categories,
        "skills": skills,
        "settings": list_settings(session),
    }


def _parse_import(data: Any) -> dict[str, Any]:
    """Structural validation of an import document; value checks happen in the repository checks."""
    if not isinstance(data, dict):
        raise BadRequest("registry file must hold a mapping with experts, categories, skills, settings")
    unknown = set(data) - {"version", "experts", "categories", "skills", "settings"}
    if unknown:
        raise BadRequest(f"registry file: unknown top-level key {sorted(unknown)[0]!r}")
    if data.get("version", EXPORT_VERSION) != EXPORT_VERSION:
        raise BadRequest(
            f"registry file: unsupported version {data.get('version')!r} (expected {EXPORT_VERSION})"
        )
    out: dict[str, Any] = {}
    for key, kind in (("experts", list), ("categories", list), ("skills", list), ("settings", dict)):
        value = data.get(key)
        if value is None:
            value = kind()
        if not isinstance(value, kind):
            raise BadRequest(f"registry file: {key} must be a {'list' if kind is list else 'mapping'}")
        out[key] = value
    allowed = {
        "experts": ({"name", "base_url", "model"}, {"name", *EXPERT_FIELDS}),
        "categories": ({"name"}, {"name", "description", "experts"}),
        "skills": ({"expert", "category", "score"}, {"expert", "category", "score", "n", "source"}),
    }
    for key, (required, known) in allowed.items():
        seen: set[Any] = set()
        for i, item in enumerate(out[key]):
            where = f"registry file: {key}[{i}]"
            if not isinstance(item, dict):
                raise BadRequest(f"{where} must be a mapping")
            missing = required - set(item)
            if missing:
                raise BadRequest(f"{where}: missing {sorted(missing)[0]!r}")
            extra = set(item) - known
            if extra:
                raise BadRequest(f"{where}: unknown field {sorted(extra)[0]!r}")
            ident = item["name"] if key != "skills" else (item["expert"], item["category"])
            if ident in seen:
                raise BadRequest(f"{where}: duplicate {ident!r}")
            seen.add(ident)
    for i, cat in enumerate(out["categories"]):
        links = cat.get("experts") or []
        if not isinstance(links, list) or not all(
            isinstance(x, dict) and set(x) == {"expert", "rank"} for x in links
        ):
            raise BadRequest(f"registry file: categories[{i}].experts must be a list of {{expert, rank}}")
    return out


def import_registry(session: Session, *, data: Any, replace: bool = False) -> ImportSummary:
    """Apply an exported document in the caller's transaction (one revision bump). Entries in the file
    replace the same-named entries (a category's expert list included); with `replace`, entries that are
    not in the file are removed as well. API keys are never touched."""
    doc = _parse_import(data)
    try:
        return _import(session, doc, replace)
    except BadRequest as exc:
        raise BadRequest(f"registry file: {exc.message}", param=exc.param) from None
    except NotFound as exc:
        raise BadRequest(f"registry file: {exc.message}", param=exc.param) from None


def _import(session: Session, doc: dict[str, Any], replace: bool) -> ImportSummary:
    added = {"experts": 0, "categories": 0, "mappings": 0, "skills": 0, "settings": 0}
    updated = dict.fromkeys(added, 0)
    removed = dict.fromkeys(added, 0)
    # Validate every value before touching the database.
    experts: dict[str, dict[str, Any]] = {}
    for item in doc["experts"]:
        name = check_name(item["name"], "expert name")
        defaults: dict[str, Any] = {
            "api_key_env": None,
            "cost_input_per_m": 0.0,
            "cost_output_per_m": 0.0,
            "max_context": 4096,
            "max_concurrency": 16,
            "timeout_s": 60.0,
            "enabled": True,
            "tags": [],
            "notes": "",
            "capabilities": [],
        }
        fields = {**defaults, **{k: v for k, v in item.items() if k != "name"}}
        if not isinstance(fields["enabled"], bool):
            raise BadRequest(f"expert {name!r}: enabled must be true or false")
        if not isinstance(fields["tags"], list):
            raise BadRequest(f"expert {name!r}: tags must be a list")
        try:
            experts[name] = _expert_fields(**fields)
        except BadRequest as exc:
            raise BadRequest(f"expert {name!r}: {exc.message}") from None
    categories: dict[str, tuple[str, list[tuple[str, int]]]] = {}
    for item in doc["categories"]:
        name = check_category_name(item["name"])
        desc = _check_text(item.get("description", "") or "", "description")
        links = [
            (check_name(x["expert"], "expert name"), _check_pos_int(x["rank"], "rank"))
            for x in item.get("experts") or []
        ]
        categories[name] = (desc, links)
    skills = []
    for item in doc["skills"]:
        s, n, src = _check_score(item["score"], item.get("n", 0), item.get("source", "") or "")
        skills.append(
            (
                check_name(item["expert"], "expert name"),
                check_category_name(item["category"]),
                s,
                n,
                src,
            )
        )
    settings = {check_name(k, "setting key"): _check_json(v, k) for k, v in doc["settings"].items()}

    revision = _bump(session)
    now = utcnow()
    existing = {e.name: e for e in session.execute(select(Expert)).scalars()}
    if replace:
        for name, old_expert in existing.items():
            if name not in experts:
                session.execute(delete(CategoryExpert).where(CategoryExpert.expert_id == old_expert.id))
                session.execute(delete(SkillScore).where(SkillScore.expert_id == old_expert.id))
                session.delete(old_expert)
                removed["experts"] += 1
    for name, fields in experts.items():
        erow = existing.get(name)
        if erow is None:
            session.add(Expert(name=name, created_at=now, updated_at=now, **fields))
            added["experts"] += 1
        elif any(getattr(erow, k) != v for k, v in fields.items()):
            for k, v in fields.items():
                setattr(erow, k, v)
            erow.updated_at = now
            updated["experts"] += 1
    session.flush()
    expert_ids = dict(session.execute(select(Expert.name, Expert.id)).tuples().all())

    existing_cats = {c.name: c for c in session.execute(select(Category)).scalars()}
    if replace:
        for name, old_cat in existing_cats.items():
            if name not in categories:
                session.execute(delete(CategoryExpert).where(CategoryExpert.category_id == old_cat.id))
                session.execute(delete(SkillScore).where(SkillScore.category_id == old_cat.id))
                session.delete(old_cat)
                removed["categories"] += 1
    for name, (desc, links) in categories.items():
        crow = existing_cats.get(name)
        if crow is None:
            crow = Category(name=name, description=desc, created_at=now)
            session.add(crow)
            session.flush()
            added["categories"] += 1
        elif crow.description != desc:
            crow.description = desc
            updated["categories"] += 1
        old = {
            eid: rank
            for eid, rank in session.execute(
                select(CategoryExpert.expert_id, CategoryExpert.rank).where(
                    CategoryExpert.category_id == crow.id
                )
            )
        }
        new: dict[int, int] = {}
        for ename, rank in links:
            if ename not in expert_ids:
                raise BadRequest(f"category {name!r} maps unknown expert {ename!r}")
            new[expert_ids[ename]] = rank
        for eid in old.keys() - new.keys():
            session.execute(
                delete(CategoryExpert).where(
                    CategoryExpert.category_id == crow.id, CategoryExpert.expert_id == eid
                )
            )
            removed["mappings"] += 1
        for eid, rank in new.items():
            if eid not in old:
                session.add(CategoryExpert(category_id=crow.id, expert_id=eid, rank=rank))
                added["mappings"] += 1
            elif old[eid] != rank:
                session.execute(
                    update(CategoryExpert)
                    .where(CategoryExpert.category_id == crow.id, CategoryExpert.expert_id == eid)
                    .values(rank=rank)
                )
                updated["mappings"] += 1
    session.flush()
    category_ids = dict(session.execute(select(Category.name, Category.id)).tuples().all())

    wanted = set()
    for ename, cname, s, n, src in skills:
        if ename not in expert_ids:
            raise BadRequest(f"skill score for unknown expert {ename!r}")
        if cname not in category_ids:
            raise BadRequest(f"skill score for unknown category {cname!r}")
        skey = (expert_ids[ename], category_ids[cname])
        wanted.add(skey)
        srow = session.get(SkillScore, skey)
        if srow is None:
            session.add(
                SkillScore(expert_id=skey[0], category_id=skey[1], score=s, n=n, source=src, updated_at=now)
            )
            added["skills"] += 1
        elif (srow.score, srow.n, srow.source) != (s, n, src):
            srow.score, srow.n, srow.source, srow.updated_at = s, n, src, now
            updated["skills"] += 1
    if replace:
        for srow in session.execute(select(SkillScore)).scalars():
            if (srow.expert_id, srow.category_id) not in wanted:
                session.delete(srow)
                removed["skills"] += 1

    for setting_key, value in settings.items():
        trow = session.get(Setting, setting_key)
        if trow is None:
            session.add(Setting(key=setting_key, value=value, updated_at=now))
            added["settings"] += 1
        elif trow.value != value:
            trow.value, trow.updated_at = value, now
            updated["settings"] += 1
    if replace:
        for trow in session.execute(select(Setting)).scalars():
            if trow.key not in settings:
                session.delete(trow)
                removed["settings"] += 1
    _flush(session, "import")
    return ImportSummary(added=added, updated=updated, removed=removed, revision=revision)
