"""`Registry(url)`: the facade the service and the CLI use. One engine; one transaction per call."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Unpack

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from registry import repository as repo
from registry.db import make_engine, translate_errors, writer
from registry.records import ApiKeyRecord, ResponseToStore, StoredResponse
from router.types import RegistrySnapshot


class Registry:
    """The registry at `url` (sqlite:///… or postgresql+psycopg://…); migrates the schema on first use."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self._engine = engine
        self._lock = threading.Lock()
        # sha256(plaintext) -> (record, revision): skips the slow salted hash while nothing changed
        self._verified: dict[bytes, tuple[ApiKeyRecord, int]] = {}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = make_engine(self.url)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on any error. `write=True` takes
        the writers' lock up front (SQLite: BEGIN IMMEDIATE; PostgreSQL: the revision row), so writers
        never interleave; use `write=False` for read-only work."""
        with translate_errors(self.url):
            engine = writer(self.engine) if write else self.engine
            with Session(engine, expire_on_commit=False) as session, session.begin():
                if write and engine.dialect.name == "postgresql":
                    # Serialise writers from their first statement, as BEGIN IMMEDIATE does on SQLite:
                    # a read-modify-write inside this block then never works on stale data.
                    repo.lock_for_write(session)
                yield session

    def _read(self, fn: Any, **kw: Any) -> Any:
        with self.session(write=False) as s:
            return fn(s, **kw)

    def revision(self) -> int:
        """The current revision: one primary-key lookup, cheap enough to poll every second or two."""
        return int(self._read(repo.current_revision))

    def snapshot(self) -> RegistrySnapshot:
        with translate_errors(self.url):
            engine = self.engine
            if engine.dialect.name == "postgresql":
                engine = engine.execution_options(isolation_level="REPEATABLE READ")
            with Session(engine) as session, session.begin():
                return repo.load_snapshot(session)

    def has_api_keys(self) -> bool:
        return bool(self._read(repo.has_api_keys))

    def verify_key(self, plaintext: str) -> ApiKeyRecord | None:
        """The active key for `plaintext` (with `.scopes`), or None."""
        digest = hashlib.sha256(plaintext.encode("utf-8", "replace")).digest()
        with self.session(write=False) as s:
            revision = repo.current_revision(s)
            cached = self._verified.get(digest)
            if cached is not None and cached[1] == revision:
                return cached[0]
            record = repo.verify_api_key(s, plaintext=plaintext)
        if record is not None:
            if len(self._verified) > 1024:
                self._verified.clear()
            self._verified[digest] = (record, revision)
        return record

    def get_setting(self, key: str, default: Any = None) -> Any:
        return self._read(repo.get_setting, key=key, default=default)

    def set_setting(self, key: str, value: Any) -> int:
        """Set a setting; returns the new revision."""
        with self.session() as s:
            return repo.set_setting(s, key=key, value=value)

    # --- key limits and usage (registry/usage.py): read and written by the service off the request path
    def key_limits(self) -> dict[str, Any]:
        """key id -> KeyLimits of every active key."""
        from registry import usage

        return dict(self._read(usage.key_limits))

    def current_usage(self, now: Any = None) -> dict[str, Any]:
        """key id -> KeyUsageRecord of its current budget period (at `now`, a UTC datetime)."""
        from registry import usage

        return dict(self._read(usage.current_usage, now=now))

    def add_usage(self, deltas: Any) -> int:
        from registry import usage

        with self.session() as s:
            return usage.add_usage(s, deltas=list(deltas))

    # --- decision log and feedback (registry/decisions.py)
    def write_decisions(self, records: Any) -> int:
        from registry import decisions

        with self.session() as s:
            return decisions.record_decisions(s, records=list(records))

    def prune_decisions(self, *, retention_days: float | None, max_rows: int | None) -> int:
        from registry import decisions

        with self.session() as s:
            return decisions.prune_decisions(s, retention_days=retention_days, max_rows=max_rows)

    def add_feedback(
        self, *, decision_id: str, score: Any, comment: str = "", key_id: str | None = None
    ) -> Any:
        from registry import decisions

        with self.session() as s:
            return decisions.add_feedback(
                s, decision_id=decision_id, score=score, comment=comment, key_id=key_id
            )

    # --- stored responses and session affinity (repository/responses.py, repository/affinity.py):
    # runtime data written on the request path, so they leave the revision row (the admins' lock) alone
    @contextlib.contextmanager
    def _runtime_write(self) -> Iterator[Session]:
        """A write transaction that takes no revision lock on PostgreSQL (the rows it writes are keyed by
        fresh ids or upserted); SQLite still starts it with BEGIN IMMEDIATE (one writer at a time)."""
        with translate_errors(self.url):
            with Session(writer(self.engine), expire_on_commit=False) as session, session.begin():
                yield session

    def put_response(self, **new: Unpack[ResponseToStore]) -> StoredResponse:
        """Store a Responses API response (`ttl_s` None: until deleted); an id stored before: Conflict."""
        with self._runtime_write() as s:
            return repo.put_response(s, **new)

    def get_response(self, id: str, *, key_id: str | None) -> StoredResponse | None:
        """The owner's unexpired response, or None."""
        result: StoredResponse | None = self._read(repo.get_response, id=id, key_id=key_id)
        return result

    def delete_response(self, id: str, *, key_id: str | None) -> bool:
        with self._runtime_write() as s:
            return repo.delete_response(s, id=id, key_id=key_id)

    def response_history(self, id: str, *, key_id: str | None) -> list[dict[str, Any]]:
        """The chain ending at `id` as Responses items, oldest first (NotFound when `id` is unknown)."""
        return list(self._read(repo.response_history, id=id, key_id=key_id))

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete expired stored responses and affinity keys; returns how many rows."""
        with self._runtime_write() as s:
            return repo.purge_expired_responses(s, now=now) + repo.purge_expired_affinity(s, now=now)

    def remember_affinity(self, keys: Sequence[str], expert: str, ttl_s: float) -> None:
        """Map every continuation key to `expert` for `ttl_s` seconds (shared by every replica)."""
        if keys:
            with self._runtime_write() as s:
                repo.remember_affinity(s, keys=keys, expert=expert, ttl_s=ttl_s)

    def affinity_expert(self, keys: Sequence[str]) -> str | None:
        """The expert of the newest unexpired key among `keys`, or None."""
        if not keys:
            return None
        result: str | None = self._read(repo.affinity_expert, keys=keys)
        return result
