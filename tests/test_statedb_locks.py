"""Two processes on upstream's shared state database: what one writes, the other reads, however the first
opens its connections (real SQLite in WAL mode, real processes).

A second connection opened in a process must not drop the POSIX locks its first one holds: SQLite's WAL
connections hold a SHARED lock on the database file to tell other processes they are there, and a process
that finds none closes "last", checkpoints and deletes the WAL the first connection still writes to, so its
later commits are lost to every other reader.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from openclaw_sup.config import statedb

READ = """
import sys
from pathlib import Path
from openclaw_sup.config import statedb
db = statedb.open_state_db(Path(sys.argv[1]))
row = db.execute("SELECT value FROM kv WHERE key = 'k'").fetchone() if sys.argv[2] == "read" else None
db.close()
print(row[0] if row else "-")
"""


def other_process(path: Path, what: str) -> str:
    res = subprocess.run([sys.executable, "-c", READ, str(path), what], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_a_second_connection_keeps_the_first_ones_commits_visible_to_other_processes(tmp_path: Path) -> None:
    path = statedb.state_db_path(tmp_path)
    first = statedb.open_state_db(path)
    with first.write():
        first.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT)")
        first.execute("INSERT INTO kv VALUES ('k', 'before')")
    first.execute("SELECT count(*) FROM kv").fetchone()
    second = statedb.open_state_db(path)  # a store's short-lived connection beside the long-lived one
    second.close()
    assert other_process(path, "read") == "before"
    other_process(path, "open-close")  # another process's connection comes and goes
    with first.write():
        first.execute("UPDATE kv SET value = 'after' WHERE key = 'k'")
    assert other_process(path, "read") == "after", "a commit of the first connection was lost to other processes"
    first.close()
    assert other_process(path, "read") == "after"


CREATOR = """
import sys
from pathlib import Path
from openclaw_sup.config import statedb
path = Path(sys.argv[1])
db = statedb._connect(path, gated=True)  # as a worker creating the schema: the file made, WAL, the gate and lock held
db.execute("PRAGMA journal_mode=WAL")
with db.gate.held():
    db.execute("BEGIN IMMEDIATE")
    print("creating", flush=True)
    sys.stdin.readline()
    db.execute("ROLLBACK")
db.close()
"""


def test_a_store_opened_while_another_process_creates_the_schema_waits_for_nothing(tmp_path: Path) -> None:
    """The gateway's stores open the shared database at start when its file exists; a worker that made the file
    to create the schema holds the write gate meanwhile. Opening must then only read (no schema yet: left to the
    first use), not queue behind that creation on the gateway's event loop (SQLite's busy back-off, up to the
    5 s timeout, then an error)."""
    path = statedb.state_db_path(tmp_path)
    creator = subprocess.Popen([sys.executable, "-c", CREATOR, str(path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert creator.stdout is not None and creator.stdout.readline().strip() == "creating"
        store = statedb.OnFirstUse(path)
        store.open_if_there()
        assert not store.opened
    finally:
        assert creator.stdin is not None
        creator.stdin.write("done\n")
        creator.stdin.close()
        creator.wait(timeout=30)
    assert creator.returncode == 0
    db = store.get()  # first use: the schema is made now, on the connection opened before
    assert db.execute("SELECT role, schema_version FROM schema_meta").fetchone() == ("global",
                                                                                    statedb.STATE_SCHEMA_VERSION)
    store.close()
    again = statedb.OnFirstUse(path)
    again.open_if_there()  # a file with its schema is opened (and checked) at once
    assert again.opened
    again.close()
