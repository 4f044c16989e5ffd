"""Upstream's databases created from a template of their schema (config/dbtemplate.py): the same file the DDL
creates, whole before it appears, safe when several processes create it at once, and read by the real CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from upstream_state import cli_env, ok, rows, run_real

from openclaw_sup.config import dbtemplate, sqlitedb, statedb

SCHEMA = "SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master ORDER BY rowid"
PRAGMAS = ("user_version", "auto_vacuum", "journal_mode", "page_size", "page_count", "freelist_count", "encoding",
           "integrity_check")
META = "SELECT meta_key, role, schema_version, agent_id, app_version FROM schema_meta"
CONTRACT = "SELECT id, main_key, canonical_ready, updated_at FROM session_key_contract"


def described(path: Path, agent: bool) -> dict[str, object]:
    out: dict[str, object] = {p: rows(path, f"PRAGMA {p}") for p in PRAGMAS}
    out["schema"] = rows(path, SCHEMA)
    out["meta"] = rows(path, META)
    if agent:
        out["contract"] = rows(path, CONTRACT)
    return out


def by_ddl(path: Path, agent: bool) -> None:
    """Created by running the DDL: the path already holds an empty file (as one another creator made), so no
    template is copied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sqlitedb.create_private(path)
    (statedb.open_agent_db(path, "main") if agent else statedb.open_state_db(path)).close()


def created(path: Path, agent: bool) -> None:
    (statedb.open_agent_db(path, "main") if agent else statedb.open_state_db(path)).close()


@pytest.mark.parametrize("agent", [False, True], ids=["state", "agent"])
def test_a_database_copied_from_the_template_is_the_one_the_ddl_creates(tmp_path: Path, agent: bool) -> None:
    name, version = (statedb.AGENT_SCHEMA[0], statedb.AGENT_SCHEMA_VERSION) if agent else \
        (statedb.STATE_SCHEMA[0], statedb.STATE_SCHEMA_VERSION)
    built = dbtemplate.template(Path(name).stem, statedb._script(name, version), statedb._plain)
    assert built is not None and built.exists()
    copied, ran = tmp_path / "copied" / "db.sqlite", tmp_path / "ran" / "db.sqlite"
    copied.parent.mkdir()
    created(copied, agent)
    by_ddl(ran, agent)
    mine, theirs = described(copied, agent), described(ran, agent)
    assert len(mine["schema"]) > (100 if agent else 200)  # type: ignore[arg-type]
    assert mine == theirs
    assert mine["integrity_check"] == [("ok",)] and mine["journal_mode"] == [("wal",)]
    assert [p.name for p in copied.parent.iterdir() if p.name.endswith(".tmp")] == []  # no copy left beside it
    assert copied.stat().st_mode & 0o777 == 0o600


def test_placing_never_replaces_a_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    template = tmp_path / "t.sqlite"
    dbtemplate.build(template, "BEGIN IMMEDIATE; CREATE TABLE t (x);", statedb._plain)
    target = tmp_path / "db" / "x.sqlite"
    target.parent.mkdir()
    target.write_bytes(b"theirs")
    finished: list[Path] = []
    assert dbtemplate.place(target, template, finished.append) is False
    assert target.read_bytes() == b"theirs" and len(finished) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.sqlite"]
    target.unlink()
    assert dbtemplate.place(target, template, lambda _copy: None) is True
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.sqlite"]
    assert rows(target, "SELECT name FROM sqlite_master") == [("t",)]


def test_copies_left_by_a_killed_creator_are_removed_by_the_next(tmp_path: Path) -> None:
    template = tmp_path / "t.sqlite"
    dbtemplate.build(template, "BEGIN IMMEDIATE; CREATE TABLE t (x);", statedb._plain)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    target = tmp_path / "db" / "x.sqlite"
    target.parent.mkdir()
    stale = target.with_name(f"x.sqlite.{gone.stdout.strip()}.0badc0de.tmp")
    live = target.with_name(f"x.sqlite.{os.getpid()}.0badc0de.tmp")  # a creator still at work keeps its copy
    for p in (stale, live, stale.with_name(stale.name + "-wal")):
        p.write_bytes(b"partial")
    assert dbtemplate.place(target, template, lambda _copy: None) is True
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(["x.sqlite", live.name])


def test_another_schema_text_gets_a_template_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dbtemplate, "template_dirs", lambda: iter([tmp_path / "ro", tmp_path / "cache"]))
    (tmp_path / "ro").write_text("not a directory")  # the first place cannot hold one: the next is used
    one = dbtemplate.template("s", "BEGIN IMMEDIATE; CREATE TABLE a (x);", statedb._plain)
    two = dbtemplate.template("s", "BEGIN IMMEDIATE; CREATE TABLE b (x);", statedb._plain)
    assert one is not None and two is not None and one != two and one.parent == tmp_path / "cache"
    assert rows(two, "SELECT name FROM sqlite_master") == [("b",)]
    assert dbtemplate.template("s", "BEGIN IMMEDIATE; CREATE TABLE a (x);", statedb._plain) == one
    assert sorted(p.name for p in one.parent.glob("*.sqlite")) == [one.name]  # the other text's is dropped


RACER = """
import sys, time
from pathlib import Path
from openclaw_sup.config import sqlitedb, statedb
path, go, mode, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
while not go.exists():
    time.sleep(0.001)
if mode == "ddl":
    sqlitedb.create_private(path)
db = statedb.open_agent_db(path, "main") if path.name.startswith("agent") else statedb.open_state_db(path)
with db.write():
    db.execute("INSERT INTO schema_meta (meta_key, role, schema_version, created_at, updated_at) "
               "VALUES (?, 'race', 0, 0, 0)", (f"race-{n}",))
db.close()
"""


@pytest.mark.parametrize("kind", ["state", "agent"])
def test_processes_creating_one_database_at_once_all_open_it(tmp_path: Path, kind: str) -> None:
    """Copiers and a DDL creator race on one fresh path: every process opens the same database and writes."""
    path = tmp_path / "dir" / f"{kind}.sqlite"
    path.parent.mkdir()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(path), str(go), "ddl" if i == 3 else "copy", str(i)],
                              stderr=subprocess.PIPE, text=True) for i in range(6)]
    time.sleep(0.5)  # let every interpreter reach the start line; a late one joins an existing file, also covered
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    assert rows(path, "SELECT meta_key FROM schema_meta WHERE role = 'race' ORDER BY 1") == [
        (f"race-{i}",) for i in range(6)]
    assert rows(path, "SELECT count(*) FROM schema_meta WHERE meta_key = 'primary'") == [(1,)]
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert sorted(p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")) == []


def test_the_switch_to_wal_waits_for_a_writer_the_busy_handler_does_not(tmp_path: Path) -> None:
    """SQLite answers the switch's read-to-write upgrade with SQLITE_BUSY at once, whatever the busy timeout (the
    race above lost a process to it now and then); `sqlitedb.wal` waits for the writer to finish instead."""
    path = tmp_path / "a.sqlite"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (a)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    opener = sqlite3.connect(path, timeout=5, isolation_level=None)
    commit = threading.Timer(2.0, writer.execute, ("COMMIT",))
    commit.start()
    # the writer commits 2 s from now, well inside the 5 s busy timeout: a switch that waited would succeed
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        opener.execute("PRAGMA journal_mode=WAL")
    commit.join()
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (2)")
    commit = threading.Timer(0.3, writer.execute, ("COMMIT",))
    commit.start()
    sqlitedb.wal(opener, 5)
    commit.join()
    assert opener.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert opener.execute("SELECT a FROM t").fetchall() == [(1,), (2,)]
    # a writer that never finishes: the error comes once the timeout has passed, not never
    other = sqlite3.connect(tmp_path / "b.sqlite", isolation_level=None)
    other.execute("CREATE TABLE t (a)")
    other.close()
    held = sqlite3.connect(tmp_path / "b.sqlite", isolation_level=None)
    held.execute("BEGIN IMMEDIATE")
    late = sqlite3.connect(tmp_path / "b.sqlite", timeout=5, isolation_level=None)
    t0 = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        sqlitedb.wal(late, 0.3)
    assert time.monotonic() - t0 >= 0.3
    for db in (held, late, writer, opener):
        db.close()


@pytest.mark.live
def test_the_real_cli_reads_a_state_dir_created_from_the_templates(tmp_path: Path) -> None:
    state = tmp_path / "state"
    statedb.open_state_db(statedb.state_db_path(state)).close()
    statedb.open_agent_db(statedb.agent_db_path(state, "main"), "main").close()
    env = cli_env(tmp_path / "home", state, state / "openclaw.json")
    (state / "openclaw.json").write_text('{"gateway": {"mode": "local"}}')
    ok(run_real(env, "pairing", "list", "telegram"))
    ok(run_real(env, "sessions", "--json"))
    assert rows(statedb.state_db_path(state), "PRAGMA integrity_check") == [("ok",)]
