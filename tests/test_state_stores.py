"""Our stores write upstream's rows as upstream writes them (what the real CLI reads is in tests/test_state_cli.py
and tests/test_state_migration.py): DM pairing, cron jobs and runs, sessions and transcripts, agent leases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from upstream_state import rows

from openclaw_sup.config import dbtemplate, statedb
from openclaw_sup.config.pairing_store import PairingStore, iso
from openclaw_sup.workers.agent.groupcommit import GroupCommit
from openclaw_sup.workers.agent.store import AgentStore, RecentWindows, db_path, message_text
from openclaw_sup.workers.scheduler.store import SIDE_NAME, Store, create_side, task_id


def test_pairing_rows_are_upstreams(tmp_path: Path) -> None:
    path = statedb.state_db_path(tmp_path)
    store = PairingStore(path)
    req = store.request("Telegram", "Work", "42", "alice", "chat-9", now=1_000).request
    assert req is not None
    store.request("telegram", "work", "43", now=2_000)
    store.approve("telegram", req.code, now=3_000)
    store.close()
    assert rows(path, "SELECT channel_key, account_id, request_id, created_at, last_seen_at, meta_json FROM "
                      "channel_pairing_requests") == [("telegram", "work", "43", iso(2_000), iso(2_000),
                                                       '{"accountId":"work"}')]
    assert iso(2_000) == "1970-01-01T00:00:02.000Z"
    assert rows(path, "SELECT channel_key, account_id, entry, sort_order, updated_at FROM "
                      "channel_pairing_allow_entries") == [("telegram", "work", "42", 0, 3_000)]


def test_cron_rows_are_upstreams(tmp_path: Path) -> None:
    path = statedb.state_db_path(tmp_path)
    store = Store(path)
    job = {"id": "j1", "name": "nightly", "enabled": True, "createdAtMs": 5, "updatedAtMs": 6, "agentId": "ops",
           "schedule": {"kind": "cron", "expr": "0 3 * * *"}, "sessionTarget": "isolated", "wakeMode": "now",
           "payload": {"kind": "command", "argv": ["true"]}, "state": {"nextRunAtMs": 99}}
    store.save_job(job)
    entry = {"ts": 10, "jobId": "j1", "jobName": "nightly", "runId": "r1", "runAtMs": 10, "trigger": "manual"}
    store.begin_run(job, entry)
    assert rows(path, "SELECT status, owner_pid FROM cron_run_receipts") == [("running", os.getpid())]
    store.finish_run({**entry, "ts": 20, "status": "ok", "summary": "done", "completionStatus": "succeeded",
                      "action": "finished"}, job, now_ms=20)
    store.close()
    key = str(tmp_path / "cron" / "jobs.json")
    (row,) = rows(path, "SELECT store_key, name, enabled, agent_id, payload_kind, job_json, state_json, "
                        "schedule_identity FROM cron_jobs")
    assert row[:5] == (key, "nightly", 1, "ops", "command")
    assert json.loads(row[5])["state"] == {} and json.loads(row[6]) == {"nextRunAtMs": 99}
    assert json.loads(row[7]) == {"version": 2, "enabled": True, "schedule": job["schedule"], "hasTrigger": False}
    (task,) = rows(path, "SELECT task_id, runtime, task_kind, source_id, run_id, status, ended_at, terminal_summary, "
                         "detail_json FROM task_runs")
    assert task[:8] == (task_id("r1"), "cron", "automation_run", "j1", f"cron:j1:10:{task[4].split(':')[3]}:r1",
                        "succeeded", 20, "done")
    assert json.loads(task[8])["kind"] == "cron-run" and json.loads(task[8])["storeKey"] == key
    assert rows(path, "SELECT status, finished_at_ms FROM cron_run_receipts") == [("ok", 20)]


def _open_fds(path: Path) -> list[str]:
    return [fd.name for fd in Path("/proc/self/fd").iterdir() if os.path.realpath(fd) == str(path)]


def test_a_new_cron_side_file_is_a_copy_of_its_template_and_an_existing_one_is_kept(tmp_path: Path) -> None:
    path = statedb.state_db_path(tmp_path)
    store = Store(path)
    store.side.execute("INSERT INTO meta VALUES ('k', 'v')")
    store.close()
    templates = [p for d in dbtemplate.template_dirs() for p in d.glob(f"{SIDE_NAME.removesuffix('.sqlite')}.*.sqlite")]
    assert len(templates) == 1

    fresh = tmp_path / "fresh" / SIDE_NAME
    fresh.parent.mkdir()
    create_side(fresh)
    assert fresh.read_bytes() == templates[0].read_bytes() and fresh.stat().st_mode & 0o777 == 0o600
    assert {name for (name,) in rows(fresh, "SELECT name FROM sqlite_master WHERE type = 'table'")} >= {
        "run_processes", "system_events", "meta"}

    create_side(store.side_path)  # there already: left as it is
    assert rows(store.side_path, "SELECT key, value FROM meta") == [("k", "v")]


def test_a_cron_side_file_that_cannot_be_opened_fails_the_start_and_closes_the_state_database(tmp_path: Path) -> None:
    path = statedb.state_db_path(tmp_path)
    (path.parent / SIDE_NAME).mkdir(parents=True)  # a side file SQLite cannot open
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        Store(path)
    assert path.exists() and _open_fds(path) == []


def test_transcripts_page_from_the_end_and_sessions_are_listed(tmp_path: Path) -> None:
    store = AgentStore(db_path(tmp_path, "main"))
    for n in range(5):
        store.append("agent:main:main", "user" if n % 2 == 0 else "assistant", f"m{n}", f"run{n // 2}")
    store.append("cron:job1", "user", "isolated")
    page, total = store.history("agent:main:main", limit=2, offset=1)
    assert total == 5 and [m["text"] for m in page] == ["m2", "m3"] and page[0]["runId"] == "run1"
    listed = {s["key"]: s for s in store.sessions()}
    assert set(listed) == {"agent:main:main", "agent:main:cron:job1"}  # stored under upstream's canonical keys
    assert listed["agent:main:main"]["messages"] == 5 and listed["agent:main:cron:job1"]["messages"] == 1
    agent_db, state_db = store.path, statedb.state_db_path(tmp_path)
    # validated and certified as upstream's writers leave a row; projection current
    assert rows(agent_db, "SELECT count(*) FROM session_nodes WHERE entry_valid != 1") == [(0,)]
    assert rows(agent_db, "SELECT count(*) FROM session_canonical_validation_pending") == [(0,)]
    assert rows(agent_db, "SELECT needs_rebuild, active_message_count FROM session_transcript_index_state s JOIN "
                          "session_nodes n ON n.current_session_id = s.session_id WHERE n.session_key = "
                          "'agent:main:main'") == [(0, 5)]
    assert rows(state_db, "SELECT owner_pid, path FROM agent_database_leases") == [(os.getpid(), str(agent_db))]
    assert rows(state_db, "SELECT agent_id, path, schema_version FROM agent_databases") == [
        ("main", "agents/main/agent/openclaw-agent.sqlite", 23)]
    store.close()
    assert rows(state_db, "SELECT count(*) FROM agent_database_leases") == [(0,)]


def test_a_turn_cut_short_keeps_its_question_once(tmp_path: Path) -> None:
    """A keyed run writes question and answer together at its end; a crash before that still leaves the question
    in the transcript when the store reopens (and a crash after the turn was written does not write it twice)."""
    path = db_path(tmp_path, "main")
    store = AgentStore(path)
    assert store.start_run("agent.turn:k1", "r1", "agent.turn", "agent:main:main", 1_000, "asked before a crash")
    assert store.start_run("agent.turn:k2", "r2", "agent.turn", "agent:main:main", 2_000, "answered, then a crash")
    store.append_turn("agent:main:main", "answered, then a crash", "the answer", "r2", ts=2_000)
    store.close()  # the worker dies here: neither run was closed
    store = AgentStore(path)
    assert sorted(store.close_interrupted()) == [("r1", "agent:main:main"), ("r2", "agent:main:main")]
    history, total = store.history("agent:main:main", 10)
    assert [(m["role"], m["text"], m["runId"]) for m in history] == [
        ("user", "answered, then a crash", "r2"), ("assistant", "the answer", "r2"),
        ("user", "asked before a crash", "r1")] and total == 3
    assert store.run("agent.turn:k1")["status"] == "error"  # type: ignore[index]
    store.close()


def _recent_history(store: AgentStore, key: str) -> list[tuple[str, str]]:
    return [(m["role"], m["text"]) for m in store.history(key, 39, count=False)[0]]


def _model_context(store: AgentStore, key: str) -> list[tuple[str, str]]:
    return [(m["role"], message_text(m)) for m in store.context(key, 39)]


@pytest.mark.parametrize("_context", [_recent_history, _model_context], ids=["history", "context"])
def test_the_models_context_follows_every_writer_of_the_transcript(
        tmp_path: Path, _context: Callable[[AgentStore, str], list[tuple[str, str]]]) -> None:
    """The recent messages a turn gives the model are kept between turns, yet what another process writes into
    the same transcript (a second connection here, as the real CLI or gateway would) is in the next context."""
    path, key = db_path(tmp_path, "main"), "agent:main:telegram:direct:42"
    ours, theirs = AgentStore(path), AgentStore(path)
    ours.append_turn(key, "q1", "a1", "r1")
    assert _context(ours, key) == [("user", "q1"), ("assistant", "a1")]
    ours.append_turn(key, "q2", "a2", "r2")  # extends what was kept
    assert _context(ours, key)[-2:] == [("user", "q2"), ("assistant", "a2")]
    theirs.append(key, "user", "from the other writer", "r3")
    assert _context(ours, key)[-1] == ("user", "from the other writer")
    session = rows(path, f"SELECT current_session_id FROM session_nodes WHERE session_key = '{key}'")[0][0]
    with theirs.db.write():  # upstream rewrites the transcript in place: a new generation, same sequence numbers
        theirs.db.execute("UPDATE transcript_rewrite_watermarks SET generation = 'rewritten' WHERE session_id = ?",
                          (session,))
        theirs.db.execute("UPDATE transcript_events SET event_json = json_set(event_json, '$.message.content', "
                          "'rewritten q1') WHERE session_id = ? AND seq = 1", (session,))
    assert _context(ours, key)[0] == ("user", "rewritten q1")
    for n in range(30):
        ours.append_turn(key, f"q{n + 4}", f"a{n + 4}", f"r{n + 4}")
    fresh = AgentStore(path)
    assert _context(ours, key) == _context(fresh, key) and len(_context(ours, key)) == 39
    for store in (ours, theirs, fresh):
        store.close()


def test_the_kept_context_holds_tool_rounds_as_a_fresh_read_does(tmp_path: Path) -> None:
    """A kept context extended by a tool round and a turn is what reading the transcript again gives."""
    path, key = db_path(tmp_path, "main"), "agent:main:main"
    ours = AgentStore(path)
    ours.append_turn(key, "q1", "a1", "r1")
    assert [m["role"] for m in ours.context(key, 39)] == ["user", "assistant"]
    ours.append_turn(key, "q2", None, "r2")
    ours.append_message(key, {"role": "assistant", "content": [
        {"type": "toolCall", "id": "c1", "name": "exec", "arguments": {"command": "true"}}]}, "r2")
    ours.append_message(key, {"role": "toolResult", "toolCallId": "c1", "toolName": "exec",
                              "content": [{"type": "text", "text": "done"}], "isError": False}, "r2")
    ours.append(key, "assistant", "a2", "r2")
    kept = ours.context(key, 39)
    assert [m["role"] for m in kept] == ["user", "assistant", "user", "assistant", "toolResult", "assistant"]
    fresh = AgentStore(path)
    assert kept == fresh.context(key, 39) and ours.context(key, 3) == kept[-3:]
    ours.append_turn(key, "q3", "a3", "r3")  # the stamp it is kept under is the one read from the database
    assert ours._context._entries["agent:main:main"].stamp == ours._stamp("agent:main:main")
    for store in (ours, fresh):
        store.close()


def test_the_kept_contexts_are_bounded_in_sessions_and_characters() -> None:
    windows = RecentWindows(sessions=2, chars=100)
    row = {"id": 1, "role": "user", "text": "x" * 40, "ts": 0, "runId": None}
    windows.put("a", ("a",), [row], 39)
    windows.put("b", ("b",), [row], 39)
    assert windows.get("a", ("a",), 39) == [row]  # used last: "b" goes first
    windows.put("c", ("c",), [row], 39)
    assert windows.get("b", ("b",), 39) is None and windows.get("a", ("a",), 39) == [row]
    windows.put("d", ("d",), [row, row], 39)  # 80 characters: the others make room
    assert [windows.get(k, (k,), 39) for k in "acd"] == [None, None, [row, row]]
    assert windows.get("d", ("other stamp",), 39) is None


def _messages_on_disk(path: Path, key: str) -> list[tuple[str, str]]:
    return [(role, text) for role, text in rows(path, "SELECT json_extract(e.event_json, '$.message.role'), "
            "coalesce(json_extract(e.event_json, '$.message.content[0].text'), "
            "json_extract(e.event_json, '$.message.content')) FROM transcript_events e JOIN session_nodes n ON "
            f"n.current_session_id = e.session_id WHERE n.session_key = '{key}' AND e.seq > 0 ORDER BY e.seq")]


def test_grouped_writes_share_one_commit_and_a_failing_one_is_rolled_back_alone(tmp_path: Path) -> None:
    path = db_path(tmp_path, "main")
    store = AgentStore(path)
    store.append_turn("agent:main:a", "q0", "a0", "r0")
    assert len(store.context("agent:main:a", 39)) == 2  # kept: the group's commit extends it

    def broken() -> None:
        store.append("agent:main:c", "user", "half written", "r9")
        store.append("agent:main:a", "user", "half written too", "r9")  # its kept context must not hold it
        raise RuntimeError("the model's answer could not be encoded")

    results = store.group([lambda: store.append_turn("agent:main:a", "q1", "a1", "r1"), broken,
                           lambda: store.append_turn("agent:main:b", "q2", "a2", "r2")])
    assert [type(error).__name__ if error else None for _value, error in results] == [None, "RuntimeError", None]
    assert _messages_on_disk(path, "agent:main:a") == [("user", "q0"), ("assistant", "a0"), ("user", "q1"),
                                                       ("assistant", "a1")]
    assert _messages_on_disk(path, "agent:main:b") == [("user", "q2"), ("assistant", "a2")]
    assert _messages_on_disk(path, "agent:main:c") == []
    fresh = AgentStore(path)
    assert store.context("agent:main:a", 39) == fresh.context("agent:main:a", 39)
    assert [message_text(m) for m in store.context("agent:main:a", 39)] == ["q0", "a0", "q1", "a1"]
    for each in (store, fresh):
        each.close()


def _open_temporary_files() -> list[str]:
    """SQLite's temporary files this process holds open (unlinked at once, so seen only among its descriptors)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [name for name in names if "etilqs_" in name]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see open files")
def test_a_group_of_turns_keeps_its_undo_pages_in_memory_not_in_a_temporary_file(tmp_path: Path) -> None:
    """A group's savepoint keeps the pages it changes for its rollback; in a file once past 64 KiB, which a burst's
    group passes: a temporary file created and written page by page for every transaction."""
    store = AgentStore(db_path(tmp_path, "main"))
    store.side.executemany("INSERT INTO runs (idem_key, run_id, method, status, started_at, answer) VALUES "
                           "(?, ?, 'agent', 'ok', 0, randomblob(2000))", [(f"k{n}", f"r{n}") for n in range(100)])
    store.side.execute("BEGIN IMMEDIATE")  # the runs file too (sqlitedb.connect), its pages changed in a savepoint
    store.side.execute("SAVEPOINT s")
    store.side.execute("UPDATE runs SET answer = randomblob(2000)")
    open_in_side = _open_temporary_files()
    store.side.execute("RELEASE s")
    store.side.execute("COMMIT")
    seen: list[list[str]] = []
    turns = [lambda n=n: store.append_turn(f"agent:main:telegram:direct:{n}", f"q{n} " * 200, f"a{n} " * 200,
                                           f"r{n}") for n in range(12)]
    results = store.group([*turns, lambda: seen.append(_open_temporary_files())])
    assert [error for _value, error in results] == [None] * 13
    assert (open_in_side, seen) == ([], [[]])
    store.close()


def test_turns_finished_in_one_loop_pass_commit_together_each_on_disk_when_answered(tmp_path: Path) -> None:
    path = db_path(tmp_path, "main")
    store = AgentStore(path)
    grouped = GroupCommit(store.group)
    seen: dict[str, list[tuple[str, str]]] = {}

    async def turn(n: int) -> None:
        key = f"agent:main:telegram:direct:{n}"
        await grouped.write(lambda: store.append_turn(key, f"q{n}", f"a{n}", f"r{n}"))
        seen[key] = _messages_on_disk(path, key)  # another connection, as the real CLI reads it

    async def cancelled_while_waiting() -> None:
        task = asyncio.ensure_future(grouped.write(lambda: store.append_turn("agent:main:gone", "q", "a", "rx")))
        await asyncio.sleep(0)
        task.cancel()

    async def burst() -> None:
        await asyncio.gather(cancelled_while_waiting(), *(turn(n) for n in range(20)))

    asyncio.run(burst())
    assert grouped.commits == 1 and grouped.writes == 20
    assert seen == {f"agent:main:telegram:direct:{n}": [("user", f"q{n}"), ("assistant", f"a{n}")] for n in range(20)}
    assert _messages_on_disk(path, "agent:main:gone") == []
    store.close()


def test_runs_started_in_one_loop_pass_share_one_commit_each_on_disk_before_its_model_call(tmp_path: Path) -> None:
    """The worker records a run's start `pending` and calls its model once the runs file's group committed it: a
    burst's starts and ends share commits, and a run another connection cannot see yet has not run."""
    store = AgentStore(db_path(tmp_path, "main"))
    runs = GroupCommit(store.group_runs)
    side = tmp_path / "agents" / "main" / "agent" / "openclaw-sup-runs.sqlite"
    running = "SELECT idem_key FROM runs WHERE status = 'running' ORDER BY started_at"
    before: list[list[tuple[str]]] = []
    after: dict[int, list[tuple[str]]] = {}

    async def run(n: int) -> None:
        assert store.start_run(f"agent.turn:k{n}", f"r{n}", "agent.turn", "agent:main:main", n, f"q{n}", pending=True)
        committed = runs.queue(lambda: None)
        before.append(rows(side, running))
        await committed
        after[n] = rows(side, running)  # where its model would be called

    async def burst() -> None:
        await asyncio.gather(*(run(n) for n in range(8)))
        await runs.write(lambda: store.finish_run("agent.turn:k0", "ok", None, {"status": "ok"}))

    asyncio.run(burst())
    started = [(f"agent.turn:k{n}",) for n in range(8)]
    assert (before, after, runs.commits) == ([[]] * 8, dict.fromkeys(range(8), started), 2)
    assert store.run("agent.turn:k0")["status"] == "ok" and not store.start_run(
        "agent.turn:k1", "r9", "agent.turn", "agent:main:main", 9, "again", pending=True)
    store.close()


def test_upstreams_databases_are_written_with_upstreams_pragmas_also_when_just_created(tmp_path: Path) -> None:
    """WAL, synchronous=NORMAL and a 64 MiB journal size limit as upstream's agent database, on the connection a
    store keeps, whether it created the file or found it."""
    for _round in ("created", "found"):
        for db in (statedb.open_agent_db(statedb.agent_db_path(tmp_path, "main"), "main"),
                   statedb.open_state_db(statedb.state_db_path(tmp_path))):
            assert [db.execute(f"PRAGMA {p}").fetchone()[0] for p in
                    ("journal_mode", "synchronous", "journal_size_limit", "foreign_keys")] == ["wal", 1, 64 << 20, 1]
            db.close()
