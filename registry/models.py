"""SQLAlchemy 2.x typed models of the expert registry. Plain tables; the repository turns rows into
frozen records so no ORM object leaves `registry.repository`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from router.defaults import EXPERT_MAX_CONCURRENCY, EXPERT_MAX_CONTEXT, EXPERT_TIMEOUT_S

NAME_LEN = 128
RESPONSE_ID_LEN = 128
OWNER_LEN = 128
AFFINITY_KEY_LEN = 200

# Deterministic constraint names keep migrations identical on SQLite (batch mode) and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON, list[str]: JSON}


class Expert(Base):
    __tablename__ = "expert"
    __table_args__ = (
        CheckConstraint("cost_input_per_m >= 0", name="cost_input_nonneg"),
        CheckConstraint("cost_output_per_m >= 0", name="cost_output_nonneg"),
        CheckConstraint("max_context > 0", name="max_context_pos"),
        CheckConstraint("max_concurrency > 0", name="max_concurrency_pos"),
        CheckConstraint("timeout_s > 0", name="timeout_pos"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    base_url: Mapped[str] = mapped_column(String(2048))
    model: Mapped[str] = mapped_column(String(512))
    api_key_env: Mapped[str | None] = mapped_column(String(256))  # the NAME of an env var, never a secret
    cost_input_per_m: Mapped[float] = mapped_column(Float, default=0.0)
    cost_output_per_m: Mapped[float] = mapped_column(Float, default=0.0)
    max_context: Mapped[int] = mapped_column(Integer, default=EXPERT_MAX_CONTEXT)
    max_concurrency: Mapped[int] = mapped_column(Integer, default=EXPERT_MAX_CONCURRENCY)
    timeout_s: Mapped[float] = mapped_column(Float, default=EXPERT_TIMEOUT_S)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    notes: Mapped[str] = mapped_column(Text, default="")
    #: tools / json / vision / audio (router.types.CAPABILITIES); empty = plain text chat only
    capabilities: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Category(Base):
    __tablename__ = "category"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CategoryExpert(Base):
    """Category -> expert with a rank (1 = first choice)."""

    __tablename__ = "category_expert"
    __table_args__ = (CheckConstraint("rank > 0", name="rank_pos"),)

    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"), primary_key=True)
    expert_id: Mapped[int] = mapped_column(ForeignKey("expert.id", ondelete="CASCADE"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer)


class SkillScore(Base):
    """Measured skill of an expert on a category (Symbolic-MoE profile entry)."""

    __tablename__ = "skill_score"
    __table_args__ = (
        CheckConstraint("score >= 0 AND score <= 1", name="score_unit"),
        CheckConstraint("n >= 0", name="n_nonneg"),
    )

    expert_id: Mapped[int] = mapped_column(ForeignKey("expert.id", ondelete="CASCADE"), primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(512), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key: `id` is the public lookup prefix; only a salted hash of the secret is stored."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), default="")
    key_hash: Mapped[str] = mapped_column(String(256))  # pbkdf2_sha256$iterations$salt_hex$hash_hex
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: limits (None = unlimited): requests and tokens per minute, USD per budget period
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    budget_usd: Mapped[float | None] = mapped_column(Float)
    budget_period: Mapped[str] = mapped_column(String(16), default="month", server_default="month")


class KeyUsage(Base):
    """What a key spent in one budget period (`period_start`: YYYY-MM-DD, or "total")."""

    __tablename__ = "key_usage"

    key_id: Mapped[str] = mapped_column(ForeignKey("api_key.id", ondelete="CASCADE"), primary_key=True)
    period_start: Mapped[str] = mapped_column(String(10), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DecisionRow(Base):
    """One completion: the routing decision, who answered, what it cost (written off the request path)."""

    __tablename__ = "decision_log"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # the completion id the client saw
    created_at: Mapped[datetime] = mapped_column(index=True)
    key_id: Mapped[str | None] = mapped_column(String(32))
    policy: Mapped[str] = mapped_column(String(64))
    #: [[category, probability], ...], best first
    categories: Mapped[list[Any]] = mapped_column(JSON)
    experts: Mapped[list[str]] = mapped_column(JSON)
    answered_by: Mapped[str | None] = mapped_column(String(128))
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    cache: Mapped[str | None] = mapped_column(String(8))
    prompt: Mapped[str | None] = mapped_column(Text)  # only with COE_LOG_PROMPTS=true


class Feedback(Base):
    """A client's score of one completion (the latest wins)."""

    __tablename__ = "feedback"
    __table_args__ = (CheckConstraint("score >= 0 AND score <= 1", name="score_unit"),)

    decision_id: Mapped[str] = mapped_column(
        ForeignKey("decision_log.id", ondelete="CASCADE"), primary_key=True
    )
    score: Mapped[float] = mapped_column(Float)
    comment: Mapped[str] = mapped_column(Text, default="", server_default="")
    key_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Setting(Base):
    __tablename__ = "setting"

    key: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RegistryRevision(Base):
    """The single row whose counter every change bumps in its own transaction; the service polls it."""

    __tablename__ = "registry_revision"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoredResponseRow(Base):
    """A Responses API response kept for `previous_response_id`, GET and DELETE (`store: true`), owned by
    the key that created it; gone once `expires_at` passed (None: kept until deleted)."""

    __tablename__ = "stored_response"

    id: Mapped[str] = mapped_column(String(RESPONSE_ID_LEN), primary_key=True)  # "resp_…"
    key_id: Mapped[str | None] = mapped_column(String(OWNER_LEN))  # the owner's digest; None: no auth
    expert: Mapped[str] = mapped_column(String(NAME_LEN))
    model: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    previous_response_id: Mapped[str | None] = mapped_column(String(RESPONSE_ID_LEN))
    #: the request's input as Responses items; `response` is the Response object the client got
    input_items: Mapped[list[Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)


class SessionAffinity(Base):
    """A continuation key (a tool call id, a response id, a session key; digested) -> the expert that
    answered, so that the continuation goes back to it on any replica until `expires_at`."""

    __tablename__ = "session_affinity"

    key: Mapped[str] = mapped_column(String(AFFINITY_KEY_LEN), primary_key=True)
    expert: Mapped[str] = mapped_column(String(NAME_LEN))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
