"""Session affinity (deploy/pipeline/affinity.py): the keys a request carries, the three modes, the LRU in
front of the registry, TTL, failures; then the real registry as the shared store of two replicas (SQLite
and PostgreSQL), and the test double held to the real registry's semantics."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deploy.pipeline.affinity import (
    Affinity,
    AffinityKeys,
    AffinityStore,
    open_tool_results,
    reply_tool_call_ids,
)
from registry import Registry
from router.errors import BadRequest, NotFound, RegistryUnavailable
from tests.deploy.doubles import FakeRegistry


class Clock:
    """One manual clock for the LRU (monotonic seconds) and the double's database (UTC datetimes)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.base = datetime(2026, 12, 6, tzinfo=UTC)

    def __call__(self) -> float:
        return self.t

    def utc(self) -> datetime:
        return self.base + timedelta(seconds=self.t)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> FakeRegistry:
    reg = FakeRegistry()
    reg.clock = clock.utc  # type: ignore[method-assign]
    return reg


def make(store: Any, clock: Clock, mode: str = "tool_loop", **kw: Any) -> Affinity:
    kw.setdefault("ttl_s", 600)
    kw.setdefault("max_entries", 100)
    return Affinity(store, mode, clock=clock, **kw)  # type: ignore[arg-type]


def tool_reply(*ids: str) -> dict[str, Any]:
    calls = [{"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in ids]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": calls},
            }
        ],
    }


TEXT_REPLY = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "done"}}]}


def loop_body(*ids: str, then: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """A conversation whose last assistant turn called tools, with their results sent back."""
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": tool_reply(*ids)["choices"][0]["message"]["tool_calls"],
    }
    results = [{"role": "tool", "tool_call_id": i, "content": "42"} for i in ids]
    return {
        "model": "coe",
        "messages": [{"role": "user", "content": "what is 6*7?"}, assistant, *results, *(then or [])],
        **extra,
    }


# --- reading a request ---------------------------------------------------------------------------------


def test_open_tool_loop_is_the_tool_results_after_the_last_assistant_turn() -> None:
    assert open_tool_results(loop_body("call_a", "call_b")["messages"]) == ["call_a", "call_b"]
    # Anthropic's tool_result blocks with text beside them arrive as tool messages then a user message
    body = loop_body("call_a", then=[{"role": "user", "content": "and be brief"}])
    assert open_tool_results(body["messages"]) == ["call_a"]
    # answered: the assistant replied after the results, and the user asks something new
    closed = loop_body(
        "call_a", then=[{"role": "assistant", "content": "42"}, {"role": "user", "content": "thx"}]
    )
    assert open_tool_results(closed["messages"]) == []
    assert open_tool_results([{"role": "user", "content": "hi"}]) == []
    assert open_tool_results("not a list") == []
    assert open_tool_results([{"role": "tool", "tool_call_id": 5}, "junk", {"role": "tool"}]) == []


def test_reply_tool_call_ids_from_a_completion_and_a_chunk() -> None:
    assert reply_tool_call_ids(tool_reply("call_1", "call_2")) == ["call_1", "call_2"]
    chunk = {
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_9", "function": {}}]}}]
    }
    assert reply_tool_call_ids(chunk) == ["call_9"]
    assert reply_tool_call_ids(TEXT_REPLY) == []
    assert reply_tool_call_ids({"choices": "x"}) == [] and reply_tool_call_ids({}) == []


def test_keys_are_owner_scoped_digests_and_the_session_comes_from_header_then_body(
    store: FakeRegistry, clock: Clock
) -> None:
    aff = make(store, clock, "conversation")
    body = loop_body("call_a", prompt_cache_key="pck", user="u1")
    keys = aff.keys(body, session="hdr", previous_response_id="resp_1", owner="k1")
    assert keys.continues and len(keys.tool_calls) == 1
    assert all(
        k.startswith(("tool:", "resp:", "session:"))
        for k in (*keys.tool_calls, keys.previous_response, keys.session)
    )
    # raw client values never become keys
    stored = " ".join((*keys.tool_calls, str(keys.previous_response), str(keys.session)))
    assert not any(raw in stored for raw in ("call_a", "resp_1", "hdr", "pck", "u1"))
    session_of = lambda s, b: aff.keys(b, session=s, previous_response_id=None, owner="k1").session  # noqa: E731
    assert session_of("hdr", body) == keys.session
    assert session_of(None, body) == session_of("pck", {})  # prompt_cache_key next
    assert session_of(None, {"user": "u1"}) == session_of(
        "u1", {}
    )  # then user (Anthropic's metadata.user_id)
    assert session_of("  ", {"user": ""}) is None
    other = aff.keys(body, session="hdr", previous_response_id="resp_1", owner="k2")
    assert other.session != keys.session and other.tool_calls != keys.tool_calls
    assert other.previous_response != keys.previous_response
    bare = aff.keys(
        {"messages": [{"role": "user", "content": "hi"}]}, session=None, previous_response_id=None
    )
    assert not bare.continues and bare == AffinityKeys()
    assert not make(store, clock, "off").keys(body, session="hdr", previous_response_id="resp_1").continues


def test_a_bad_mode_or_size_is_a_bad_request(store: FakeRegistry, clock: Clock) -> None:
    with pytest.raises(BadRequest, match="tool_loop, conversation, off"):
        make(store, clock, "sticky")
    with pytest.raises(BadRequest):
        make(store, clock, ttl_s=0)
    with pytest.raises(BadRequest):
        make(store, clock, max_entries=-1)


# --- the modes -----------------------------------------------------------------------------------------


def test_tool_loop_mode_keeps_an_open_loop_on_its_expert_and_nothing_else(
    store: FakeRegistry, clock: Clock
) -> None:
    aff = make(store, clock)
    first = aff.keys(
        {"messages": [{"role": "user", "content": "6*7?"}], "user": "u"},
        session="s",
        previous_response_id=None,
    )
    assert aff.lookup(first) is None
    assert aff.remember(first, "math", tool_reply("call_a", "call_b"), response_id="resp_1") == 2
    cont = aff.keys(loop_body("call_a", "call_b", user="u"), session="s", previous_response_id="resp_1")
    assert aff.lookup(cont) == ("math", "tool_loop")
    # the loop closed: a new question of the same session is routed as usual in this mode
    closed = loop_body(
        "call_a", then=[{"role": "assistant", "content": "42"}, {"role": "user", "content": "and 7*8?"}]
    )
    closed_keys = aff.keys(closed, session="s", previous_response_id="resp_1")
    assert not closed_keys.continues and closed_keys.session is None and closed_keys.previous_response is None
    reads = store.affinity_reads
    assert aff.lookup(closed_keys) is None and store.affinity_reads == reads  # not even a read
    # a text reply remembers nothing in this mode
    writes = store.affinity_writes
    assert aff.remember(cont, "math", TEXT_REPLY, response_id="resp_2") == 0
    assert store.affinity_writes == writes
    # someone else's tool call ids are no continuation of this owner's
    assert (
        aff.lookup(aff.keys(loop_body("call_a"), session=None, previous_response_id=None, owner="k2")) is None
    )


def test_conversation_mode_follows_tool_loop_then_previous_response_then_session(
    store: FakeRegistry, clock: Clock
) -> None:
    aff = make(store, clock, "conversation")
    first = aff.keys(
        {"messages": [{"role": "user", "content": "hi"}]}, session="s1", previous_response_id=None
    )
    assert aff.remember(first, "general", TEXT_REPLY, response_id="resp_1") == 2  # session + response id
    by_session = aff.keys({"messages": []}, session="s1", previous_response_id=None)
    assert aff.lookup(by_session) == ("general", "session")
    by_prev = aff.keys({"messages": []}, session=None, previous_response_id="resp_1")
    assert aff.lookup(by_prev) == ("general", "previous_response")
    # a tool loop answered by another expert wins over the session
    loop_start = aff.keys({"messages": []}, session="s1", previous_response_id="resp_1")
    aff.remember(loop_start, "math", tool_reply("call_x"), response_id="resp_2")
    assert aff.lookup(aff.keys(loop_body("call_x"), session="s1", previous_response_id="resp_1")) == (
        "math",
        "tool_loop",
    )
    # the session now points at the expert that answered last
    assert aff.lookup(by_session) == ("math", "session")
    assert aff.lookup(aff.keys({}, session=None, previous_response_id="resp_2")) == (
        "math",
        "previous_response",
    )
    assert aff.lookup(aff.keys({}, session=None, previous_response_id="resp_9")) is None


def test_off_reads_and_writes_nothing(store: FakeRegistry, clock: Clock) -> None:
    make(store, clock, "conversation").remember(
        AffinityKeys(session="session:x"), "math", tool_reply("call_a"), response_id="resp_1"
    )
    aff = make(store, clock, "off")
    keys = AffinityKeys(tool_calls=(AffinityKeys().tool_call_key("call_a"),), session="session:x")
    reads, writes = store.affinity_reads, store.affinity_writes
    assert aff.lookup(keys) is None
    assert aff.remember(keys, "math", tool_reply("call_b"), response_id="resp_2") == 0
    assert (store.affinity_reads, store.affinity_writes) == (reads, writes)


# --- the LRU, TTL, replicas, failures ------------------------------------------------------------------


def test_a_second_replica_reads_the_registry_once_then_its_lru(store: FakeRegistry, clock: Clock) -> None:
    a, b = make(store, clock), make(store, clock)
    a.remember(AffinityKeys(), "math", tool_reply("call_a"))
    cont = b.keys(loop_body("call_a"), session=None, previous_response_id=None)
    reads = store.affinity_reads
    assert a.lookup(cont) == ("math", "tool_loop") and store.affinity_reads == reads  # its own LRU
    assert b.lookup(cont) == ("math", "tool_loop") and store.affinity_reads == reads + 1
    assert b.lookup(cont) == ("math", "tool_loop") and store.affinity_reads == reads + 1
    clock.t += 6  # past reread_s: what b read from the database is read again
    assert b.lookup(cont) == ("math", "tool_loop") and store.affinity_reads == reads + 2
    assert a.lookup(cont) == ("math", "tool_loop") and store.affinity_reads == reads + 2  # a wrote it


def test_a_session_that_moved_on_another_replica_is_seen_after_reread_s(
    store: FakeRegistry, clock: Clock
) -> None:
    a, b = make(store, clock, "conversation"), make(store, clock, "conversation")
    keys = a.keys({}, session="s", previous_response_id=None)
    a.remember(keys, "math", TEXT_REPLY)
    assert b.lookup(keys) == ("math", "session")
    a.remember(keys, "general", TEXT_REPLY)  # math could not serve; general answered on replica a
    assert b.lookup(keys) == ("math", "session")  # b's cached entry is trusted for reread_s
    clock.t += 5.5
    assert b.lookup(keys) == ("general", "session")


def test_entries_expire_after_ttl(store: FakeRegistry, clock: Clock) -> None:
    aff = make(store, clock, ttl_s=60)
    aff.remember(AffinityKeys(), "math", tool_reply("call_a"))
    cont = aff.keys(loop_body("call_a"), session=None, previous_response_id=None)
    clock.t += 59
    assert aff.lookup(cont) == ("math", "tool_loop")
    clock.t += 2
    assert aff.lookup(cont) is None and len(aff) == 0


def test_the_lru_is_bounded(store: FakeRegistry, clock: Clock) -> None:
    aff = make(store, clock, max_entries=3)
    for i in range(5):
        aff.remember(AffinityKeys(), f"e{i}", tool_reply(f"call_{i}"))
    assert len(aff) == 3
    reads = store.affinity_reads
    assert aff.lookup(aff.keys(loop_body("call_4"), session=None, previous_response_id=None)) == (
        "e4",
        "tool_loop",
    )
    assert store.affinity_reads == reads
    # the oldest fell out of memory, not out of the shared store
    assert aff.lookup(aff.keys(loop_body("call_0"), session=None, previous_response_id=None)) == (
        "e0",
        "tool_loop",
    )
    assert store.affinity_reads == reads + 1 and len(aff) == 3
    unbuffered = make(store, clock, max_entries=0)
    unbuffered.remember(AffinityKeys(), "math", tool_reply("call_z"))
    assert len(unbuffered) == 0
    assert unbuffered.lookup(unbuffered.keys(loop_body("call_z"), session=None, previous_response_id=None))


def test_expired_rows_are_purged_now_and_then(store: FakeRegistry, clock: Clock) -> None:
    aff = make(store, clock, ttl_s=60, purge_every_s=300)
    aff.remember(AffinityKeys(), "math", tool_reply("call_old"))
    clock.t += 301
    aff.remember(AffinityKeys(), "math", tool_reply("call_new"))  # purges the expired row
    assert len(store.affinity) == 1
    clock.t += 100
    aff.remember(AffinityKeys(), "math", tool_reply("call_newer"))  # not yet time to purge again
    assert len(store.affinity) == 2


def test_lookup_from_memory_alone_stops_where_a_read_is_needed(store: FakeRegistry, clock: Clock) -> None:
    a, b = make(store, clock, "conversation"), make(store, clock, "conversation")
    a.remember(a.keys({}, session="s", previous_response_id=None), "general", TEXT_REPLY)
    b.remember(b.keys({}, session="s", previous_response_id=None), "general", TEXT_REPLY)
    a.remember(AffinityKeys(), "math", tool_reply("call_a"))  # the tool loop: only replica a knows it
    cont = b.keys(loop_body("call_a"), session="s", previous_response_id=None)
    reads = store.affinity_reads
    # b has the session in memory, but the stronger tool-loop key needs a read: no answer from memory
    assert b.lookup(cont, read=False) is None and store.affinity_reads == reads
    assert b.lookup(cont) == ("math", "tool_loop") and store.affinity_reads == reads + 1
    assert b.lookup(cont, read=False) == ("math", "tool_loop")
    assert b.lookup(b.keys({}, session="s", previous_response_id=None), read=False) == ("general", "session")
    assert store.affinity_reads == reads + 1


class DownRegistry:
    def __init__(self) -> None:
        self.calls = 0

    def remember_affinity(self, keys: Any, expert: str, ttl_s: float) -> None:
        self.calls += 1
        raise RegistryUnavailable("registry database sqlite:///x is unreachable: disk I/O error")

    def affinity_expert(self, keys: Any) -> str | None:
        self.calls += 1
        raise RegistryUnavailable("registry database sqlite:///x is unreachable: disk I/O error")

    def purge_expired(self) -> int:
        raise RegistryUnavailable("down")


def test_a_failing_registry_never_fails_the_request(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    down = DownRegistry()
    aff = make(down, clock, "conversation")
    cont = aff.keys(loop_body("call_a"), session="s", previous_response_id="resp_1")
    with caplog.at_level(logging.WARNING, logger="coe.affinity"):
        assert aff.lookup(cont) is None and down.calls == 1  # no read of the weaker keys after a failure
        # left alone for backoff_s: nothing tried, what this replica answered is still in memory
        assert aff.remember(AffinityKeys(), "math", tool_reply("call_a")) == 1 and down.calls == 1
        assert aff.lookup(cont) == ("math", "tool_loop")
        assert aff.lookup(aff.keys({}, session="t", previous_response_id=None)) is None and down.calls == 1
        clock.t += 5
        assert aff.remember(AffinityKeys(), "math", tool_reply("call_b")) == 1 and down.calls == 2
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "session affinity not read (the registry failed; retried in 5 s)",
        "session affinity not stored (the registry failed; retried in 5 s)",
    ]


# --- the real registry ---------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_db_url" if request.param == "sqlite" else "postgres_db_url")


def test_two_replicas_share_affinity_through_the_registry(db_url: str) -> None:
    """Two ingress replicas, each with its own Registry on one database: the tool loop that replica a
    answered is continued on replica b with the same expert; a session moves; rows expire and purge."""
    with Registry(db_url) as ra, Registry(db_url) as rb:
        a = Affinity(ra, "conversation", ttl_s=600, max_entries=100)
        b = Affinity(rb, "conversation", ttl_s=600, max_entries=100, reread_s=0.0)
        first = a.keys(
            {"messages": [{"role": "user", "content": "6*7?"}]},
            session="s",
            previous_response_id=None,
            owner="k1",
        )
        assert a.lookup(first) is None
        assert a.remember(first, "math", tool_reply("call_a"), response_id="resp_1") == 3
        cont = b.keys(loop_body("call_a"), session="s", previous_response_id="resp_1", owner="k1")
        assert b.lookup(cont) == ("math", "tool_loop")
        assert b.lookup(b.keys({}, session=None, previous_response_id="resp_1", owner="k1")) == (
            "math",
            "previous_response",
        )
        assert b.lookup(b.keys({}, session=None, previous_response_id="resp_1", owner="k2")) is None
        b.remember(cont, "general", TEXT_REPLY)  # the session moved on replica b
        by_session = a.keys({}, session="s", previous_response_id=None, owner="k1")
        assert a.lookup(by_session) == ("math", "session")  # a trusts what it wrote for reread_s ...
        assert ra.affinity_expert([by_session.session or ""]) == "general"  # ... the database moved on
        assert b.lookup(by_session) == ("general", "session")
        assert ra.purge_expired(now=datetime.now(UTC) + timedelta(seconds=601)) == 3


def test_the_registry_and_its_double_are_affinity_stores() -> None:
    for store in (Registry("sqlite://"), FakeRegistry(), DownRegistry()):
        assert isinstance(store, AffinityStore)


def test_the_double_keeps_the_registrys_semantics(tmp_path: Any) -> None:
    """Stored responses and affinity: the same calls give the same answers on FakeRegistry and Registry."""

    def scenario(reg: Any) -> list[Any]:
        out: list[Any] = []
        item = {"type": "message", "role": "user", "content": "hi"}
        for rid, prev in (("resp_1", None), ("resp_2", "resp_1")):
            resp = {
                "id": rid,
                "output": [
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": rid}],
                    }
                ],
            }
            reg.put_response(
                id=rid,
                key_id="k",
                expert="math",
                model="m",
                input_items=[item],
                response=resp,
                previous_response_id=prev,
                ttl_s=60,
            )
        rec = reg.get_response("resp_2", key_id="k")
        out += [rec.expert, rec.previous_response_id, rec.input_items, rec.output_items]
        out += [reg.get_response("resp_2", key_id="other"), reg.get_response("resp_2", key_id=None)]
        out.append(reg.response_history("resp_2", key_id="k"))
        try:
            reg.response_history("resp_x", key_id="k")
        except NotFound as exc:
            out.append((exc.param, exc.code))
        out += [reg.delete_response("resp_1", key_id="other"), reg.delete_response("resp_1", key_id="k")]
        out.append(reg.response_history("resp_2", key_id="k"))
        reg.remember_affinity(["tool:a"], "math", 60)
        reg.remember_affinity(["session:s"], "code", 60)
        out += [
            reg.affinity_expert(["tool:a", "session:s"]),
            reg.affinity_expert(["tool:a"]),
            reg.affinity_expert(["x"]),
        ]
        out.append(reg.purge_expired(now=datetime.now(UTC) + timedelta(seconds=61)))
        out.append(reg.get_response("resp_2", key_id="k"))
        return out

    with Registry(f"sqlite:///{tmp_path}/r.db") as real:
        assert scenario(FakeRegistry()) == scenario(real)


def test_an_unreachable_database_gives_the_usual_choice(caplog: pytest.LogCaptureFixture) -> None:
    """The real Registry on a PostgreSQL port nobody listens on: RegistryUnavailable inside, no error out."""
    with Registry("postgresql+psycopg://coe@127.0.0.1:1/coe") as down:
        aff = Affinity(down, "conversation", ttl_s=60, max_entries=10)
        keys = aff.keys(loop_body("call_a"), session="s", previous_response_id="resp_1")
        with caplog.at_level(logging.WARNING, logger="coe.affinity"):
            assert aff.lookup(keys) is None
            assert aff.remember(keys, "math", tool_reply("call_b"), response_id="resp_2") == 3
    # one warning: after the failed read the database is left alone for backoff_s
    assert len(caplog.records) == 1 and "is unreachable" in caplog.records[0].getMessage()
