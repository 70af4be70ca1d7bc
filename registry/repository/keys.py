"""API keys of the service: created once in plaintext, stored as salted PBKDF2 hashes, scoped, revocable."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.models import ApiKey, utcnow
from registry.records import SCOPES, ApiKeyRecord
from registry.repository.base import aware, bump, flush
from registry.validation import check_name
from router.errors import BadRequest, NotFound

KEY_RE = re.compile(r"^coe_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")
PBKDF2_ITERATIONS = 120_000


def check_scopes(values: Iterable[Any]) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(values))
    if not scopes:
        raise BadRequest(f"an API key needs at least one scope ({', '.join(SCOPES)})", param="scope")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise BadRequest(f"unknown scope {unknown[0]!r}: choose from {', '.join(SCOPES)}", param="scope")
    return tuple(s for s in SCOPES if s in scopes)


def _hash_secret(secret: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)


def key_record(k: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=k.id,
        name=k.name,
        scopes=tuple(k.scopes),
        created_at=aware(k.created_at),  # type: ignore[arg-type]
        revoked_at=aware(k.revoked_at),
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
    bump(session)
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
    flush(session, "API key")
    return key_record(row), f"coe_{key_id}_{secret}"


def list_api_keys(session: Session, *, include_revoked: bool = True) -> list[ApiKeyRecord]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return [key_record(k) for k in session.execute(stmt).scalars()]


def revoke_api_key(session: Session, *, key_id: str) -> ApiKeyRecord:
    bump(session)
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"unknown API key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.flush()
    return key_record(row)


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
    return key_record(row) if ok else None


def has_api_keys(session: Session) -> bool:
    """Whether any API key was ever created (revoked ones count: revoking every key must not open the
    service to anonymous use)."""
    return session.execute(select(func.count()).select_from(ApiKey)).scalar_one() > 0
