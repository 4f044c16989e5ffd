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
