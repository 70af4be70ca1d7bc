"""Stored responses and session affinity through `Registry` and the repository, on SQLite and PostgreSQL:
owners, expiry and purge, the history of a chain, upserts under concurrent writers, no revision bump."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from registry import Registry
from registry import repository as repo
from router.errors import BadRequest, Conflict, NotFound


@pytest.fixture
def reg(db_url: str) -> Any:
    r = Registry(db_url)
    yield r
    r.close()


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def answer(rid: str, text: str, *, call: str | None = None) -> dict[str, Any]:
    out: list[dict[str, Any]] = [
        {
            "type": "message",
            "id": f"msg_{rid}",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
    ]
    if call:
        out.append(
            {"type": "function_call", "id": f"fc_{rid}", "call_id": call, "name": "f", "arguments": "{}"}
        )
    return {"id": rid, "object": "response", "status": "completed", "output": out}


def store(
    reg: Registry,
    rid: str,
    text: str,
    *,
    prev: str | None = None,
    key: str | None = "k1",
    ttl_s: float | None = 3600,
    call: str | None = None,
) -> Any:
    return reg.put_response(
        id=rid,
        key_id=key,
        expert="math",
        model="coe",
        input_items=[user(text)],
        response=answer(rid, f"re: {text}", call=call),
        previous_response_id=prev,
        ttl_s=ttl_s,
    )


def test_put_get_delete_round_trip_per_owner(reg: Registry) -> None:
    rev = reg.revision()
    stored = store(reg, "resp_a", "hello", call="call_1")
    assert stored.expires_at is not None and stored.expires_at - stored.created_at == timedelta(hours=1)
    got = reg.get_response("resp_a", key_id="k1")
    assert got is not None
    assert (got.id, got.expert, got.model, got.key_id, got.previous_response_id) == (
        "resp_a",
        "math",
        "coe",
        "k1",
        None,
    )
    assert got.input_items == (user("hello"),)
    assert got.response == answer("resp_a", "re: hello", call="call_1")
    assert [i["type"] for i in got.output_items] == ["message", "function_call"]
    assert got.created_at.tzinfo is not None
    # another owner, and the anonymous owner, see nothing and delete nothing
    assert reg.get_response("resp_a", key_id="k2") is None
    assert reg.get_response("resp_a", key_id=None) is None
    assert reg.delete_response("resp_a", key_id="k2") is False
    assert reg.get_response("resp_b", key_id="k1") is None
    assert reg.delete_response("resp_a", key_id="k1") is True
    assert reg.get_response("resp_a", key_id="k1") is None
    assert reg.delete_response("resp_a", key_id="k1") is False
    # runtime data: the service's snapshot is not reloaded for it
    assert reg.revision() == rev


def test_anonymous_owner_and_no_expiry(reg: Registry) -> None:
    stored = store(reg, "resp_anon", "hi", key=None, ttl_s=None)
    assert stored.expires_at is None
    assert reg.get_response("resp_anon", key_id=None) is not None
    assert reg.get_response("resp_anon", key_id="k1") is None
    assert reg.purge_expired(now=datetime.now(UTC) + timedelta(days=10_000)) == 0
    assert reg.get_response("resp_anon", key_id=None) is not None


def test_a_stored_id_is_a_conflict_and_bad_values_are_bad_requests(reg: Registry) -> None:
    store(reg, "resp_dup", "one")
    with pytest.raises(Conflict):
        store(reg, "resp_dup", "two")
    assert reg.get_response("resp_dup", key_id="k1").input_items == (user("one"),)  # type: ignore[union-attr]
    for ttl in (0, -1, float("nan"), float("inf"), True, "60"):
        with pytest.raises(BadRequest, match="retention"):
            store(reg, "resp_ttl", "x", ttl_s=ttl)  # type: ignore[arg-type]
    for bad in ("", "r" * 129):
        with pytest.raises(BadRequest) as err:
            store(reg, bad, "x")
        assert err.value.param == "id"
        assert reg.get_response(bad, key_id="k1") is None and reg.delete_response(bad, key_id="k1") is False
    with pytest.raises(BadRequest):
        reg.put_response(
            id="resp_x",
            key_id=None,
            expert="e",
            model="m",
            input_items=["text"],  # type: ignore[list-item]
            response={},
        )
    with pytest.raises(BadRequest):
        reg.put_response(id="resp_x", key_id=None, expert="e", model="m", input_items=[], response=[])  # type: ignore[arg-type]
    assert reg.get_response("resp_x", key_id=None) is None


def test_expired_responses_read_as_unknown_and_purge_deletes_them(reg: Registry) -> None:
    store(reg, "resp_old", "old", ttl_s=60)
    store(reg, "resp_new", "new", ttl_s=3600)
    later = datetime.now(UTC) + timedelta(minutes=5)
    with reg.session(write=False) as s:
        assert repo.get_response(s, id="resp_old", key_id="k1", now=later) is None
        assert repo.get_response(s, id="resp_new", key_id="k1", now=later) is not None
    with reg.session() as s:
        assert repo.delete_response(s, id="resp_old", key_id="k1", now=later) is False
    assert reg.get_response("resp_old", key_id="k1") is not None  # not yet expired now
    assert reg.purge_expired() == 0
    assert reg.purge_expired(now=later) == 1
    assert reg.get_response("resp_old", key_id="k1") is None
    assert reg.get_response("resp_new", key_id="k1") is not None


def test_history_follows_the_chain_oldest_first(reg: Registry) -> None:
    store(reg, "resp_1", "first", call="call_1")
    store(reg, "resp_2", "second", prev="resp_1")
    store(reg, "resp_3", "third", prev="resp_2")
    history = reg.response_history("resp_3", key_id="k1")
    texts = [
        (i.get("role"), i["content"][0]["text"]) if i["type"] == "message" else (i["type"], i["call_id"])
        for i in history
    ]
    assert texts == [
        ("user", "first"),
        ("assistant", "re: first"),
        ("function_call", "call_1"),
        ("user", "second"),
        ("assistant", "re: second"),
        ("user", "third"),
        ("assistant", "re: third"),
    ]
    assert reg.response_history("resp_1", key_id="k1")[0] == user("first")
    # another owner, an unknown id: NotFound on previous_response_id (OpenAI's 404)
    for rid, key in (("resp_3", "k2"), ("resp_9", "k1")):
        with pytest.raises(NotFound) as err:
            reg.response_history(rid, key_id=key)
        assert err.value.param == "previous_response_id" and rid in err.value.message
    # a deleted link ends the chain: the turns before it are gone with it
    assert reg.delete_response("resp_2", key_id="k1")
    assert [i["content"][0]["text"] for i in reg.response_history("resp_3", key_id="k1")] == [
        "third",
        "re: third",
    ]


def test_history_ends_at_an_expired_link(reg: Registry) -> None:
    store(reg, "resp_e1", "first", ttl_s=60)
    store(reg, "resp_e2", "second", prev="resp_e1", ttl_s=3600)
    later = datetime.now(UTC) + timedelta(minutes=5)
    with reg.session(write=False) as s:
        items = repo.response_history(s, id="resp_e2", key_id="k1", now=later)
        assert [i["content"][0]["text"] for i in items] == ["second", "re: second"]
        assert len(repo.response_history(s, id="resp_e2", key_id="k1")) == 4


def test_affinity_newest_unexpired_key_wins(reg: Registry) -> None:
    rev = reg.revision()
    assert reg.affinity_expert(["tool:a"]) is None
    assert reg.affinity_expert([]) is None
    reg.remember_affinity([], "math", 60)  # nothing to do
    reg.remember_affinity(["tool:a", "tool:b"], "math", 60)
    assert reg.affinity_expert(["tool:a"]) == "math"
    reg.remember_affinity(["session:s"], "code", 60)
    assert reg.affinity_expert(["tool:a", "session:s", "tool:zzz"]) == "code"  # the newest
    reg.remember_affinity(["tool:b"], "general", 60)  # replaces the expert of one key
    assert reg.affinity_expert(["tool:b"]) == "general"
    assert reg.affinity_expert(["tool:a"]) == "math"
    assert reg.revision() == rev


def test_affinity_expiry_and_purge(reg: Registry) -> None:
    reg.remember_affinity(["tool:short"], "math", 30)
    reg.remember_affinity(["tool:long"], "code", 3600)
    later = datetime.now(UTC) + timedelta(minutes=1)
    with reg.session(write=False) as s:
        assert repo.affinity_expert(s, keys=["tool:short"], now=later) is None
        assert repo.affinity_expert(s, keys=["tool:short", "tool:long"], now=later) == "code"
    assert reg.purge_expired(now=later) == 1
    assert reg.affinity_expert(["tool:short"]) is None and reg.affinity_expert(["tool:long"]) == "code"
    # remembering an expired key again revives it
    reg.remember_affinity(["tool:long"], "math", 3600)
    assert reg.affinity_expert(["tool:long"]) == "math"


def test_affinity_rejects_bad_keys_and_values(reg: Registry) -> None:
    for keys in ("tool:a", [""], ["k" * 201], [None], [f"k{i}" for i in range(257)]):
        with pytest.raises(BadRequest):
            reg.remember_affinity(keys, "math", 60)  # type: ignore[arg-type]
        with pytest.raises(BadRequest):
            reg.affinity_expert(keys)  # type: ignore[arg-type]
    for expert, ttl in (("", 60), ("e" * 129, 60), ("math", 0), ("math", float("nan"))):
        with pytest.raises(BadRequest):
            reg.remember_affinity(["tool:a"], expert, ttl)
    assert reg.affinity_expert(["tool:a"]) is None
    reg.remember_affinity(["k" * 200, "tool:a", "tool:a"], "math", 60)  # duplicates collapse
    assert reg.affinity_expert(["k" * 200]) == "math"


def test_concurrent_upserts_of_one_key_never_conflict(db_url: str) -> None:
    """Replicas remembering the same session key at once: an upsert, not a unique violation."""
    errors: list[BaseException] = []
    experts = [f"e{i}" for i in range(6)]
    barrier = threading.Barrier(len(experts))

    def worker(name: str) -> None:
        r = Registry(db_url)
        try:
            barrier.wait()
            for _ in range(15):
                r.remember_affinity(["session:shared", f"tool:{name}"], name, 60)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            r.close()

    with Registry(db_url) as r:  # migrate once, before the race (the engine is made on first use)
        r.revision()
    threads = [threading.Thread(target=worker, args=(e,)) for e in experts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Registry(db_url) as r:
        assert r.affinity_expert(["session:shared"]) in experts
        assert all(r.affinity_expert([f"tool:{e}"]) == e for e in experts)


def test_coe_db_purge_deletes_only_expired_rows(db_url: str) -> None:
    from typer.testing import CliRunner

    from deploy.ops import cli as root

    root._register()
    with Registry(db_url) as reg:
        store(reg, "resp_gone", "x", ttl_s=0.001)
        store(reg, "resp_kept", "y", ttl_s=3600)
        reg.remember_affinity(["tool:gone"], "math", 0.001)
        reg.remember_affinity(["tool:kept"], "math", 3600)
        time.sleep(0.01)
        env = {"COE_DATABASE_URL": db_url, "COE_CONFIG": None}
        r = CliRunner().invoke(root.app, ["db", "purge", "--json"], env=env)
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout) == {"purged": 2}
        r = CliRunner().invoke(root.app, ["db", "purge"], env=env)
        assert r.exit_code == 0 and r.stderr.strip() == "purged 0 expired row(s)" and r.stdout == ""
        assert reg.get_response("resp_kept", key_id="k1") and reg.affinity_expert(["tool:kept"]) == "math"
