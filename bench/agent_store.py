"""Agent store bench: what one channel turn costs the agent worker in SQLite, upstream's format beside a floor.

Run: .venv/bin/python bench/agent_store.py [--turns 1000] [--sessions 50] [--reps 5]

Every turn is what the agent worker does for one `agent.turn` with an idempotency key: `start_run`, the model's
context (`context(key, 39)`, tool rounds included, as the worker reads it), the question and answer
(`append_turn`), `finish_run`, round-robin over `--sessions` sessions. Measured as the worker's CPU per turn
(process CPU time, so other load on the machine inflates it less than wall time), each phase apart, median / min /
max over `--reps` fresh state dirs; also opening the store on a fresh state dir (creating upstream's agent
database) and on an existing one.

The floor is the same four calls on two plain tables (messages, runs): the layout openclaw-sup wrote before it
used upstream's agent database, which the real CLI cannot read. The difference is what upstream's format costs:
its indexes, triggers and projection tables (the turn writes one transaction of about 25 pages).

Then the turns as the worker writes them in a burst (workers/agent/groupcommit.py): `--group` turns at a time,
their starts in one transaction, each given its context, their questions and answers in one transaction
(`group`), their ends in another (`group_runs`). Printed: CPU per turn, and two counts that do not depend on the
machine's load, SQL statements per turn on each database (the trigger programs they run included) and WAL pages
written per turn (agent database and runs side file). To compare builds, run this file with another build's
interpreter, e.g. `~/.cache/openclaw-sup-bench/ours-<sha>/bin/python bench/agent_store.py`
(bench/bench_managers.py installs them).
"""

from __future__ import annotations

import argparse
import collections
import inspect
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from openclaw_sup.config import sqlitedb
from openclaw_sup.workers.agent.store import AgentStore, db_path, now_ms

PHASES = ("start_run", "context", "append_turn", "finish_run")
PENDING = "pending" in inspect.signature(AgentStore.start_run).parameters  # a build whose starts join a group


class Floor:
    """Two plain tables, one autocommit statement per call (openclaw-sup's own layout before upstream's)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlitedb.connect(path)
        self.db.executescript(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_key TEXT NOT NULL, role TEXT "
            "NOT NULL, text TEXT NOT NULL, ts INTEGER NOT NULL, run_id TEXT); CREATE INDEX messages_by_session ON "
            "messages(session_key, id); CREATE TABLE runs (idem_key TEXT PRIMARY KEY, run_id TEXT NOT NULL, method "
            "TEXT NOT NULL, session_key TEXT, status TEXT NOT NULL, started_at INTEGER NOT NULL, ended_at INTEGER, "
            "error TEXT, answer BLOB); CREATE INDEX runs_by_id ON runs(run_id);")

    def start_run(self, idem: str, run_id: str, method: str, key: str, started: int, _message: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO runs(idem_key, run_id, method, session_key, status, started_at) "
                        "VALUES (?,?,?,?, 'running', ?)", (idem, run_id, method, key, started))

    def context(self, key: str, limit: int) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id, role, text, ts, run_id FROM messages WHERE session_key=? ORDER BY id "
                               "DESC LIMIT ?", (key, limit)).fetchall()
        return [{"id": r[0], "role": r[1], "text": r[2], "ts": r[3], "runId": r[4]} for r in reversed(rows)]

    def append_turn(self, key: str, question: str, answer: str, run_id: str, **_: Any) -> None:
        for role, text in (("user", question), ("assistant", answer)):
            self.db.execute("INSERT INTO messages(session_key, role, text, ts, run_id) VALUES (?,?,?,?,?)",
                            (key, role, text, now_ms(), run_id))

    def finish_run(self, idem: str, status: str, error: str | None, answer: Any) -> None:
        self.db.execute("UPDATE runs SET status=?, error=?, ended_at=?, answer=? WHERE idem_key=?",
                        (status, error, now_ms(), orjson.dumps(answer), idem))

    def close(self) -> None:
        self.db.close()


def steps(store: Any, i: int, sessions: int, pending: bool = False) -> tuple[Callable[[], Any], ...]:
    """Turn `i`: its four calls, in order (`pending`: its start left to the next `group_runs`, as the worker does)."""
    key, run_id = f"agent:main:telegram:direct:{1000 + i % sessions}", str(uuid.uuid4())
    idem, text = f"agent.turn:{run_id}", f"message {i} " * 4
    later = {"pending": True} if pending else {}
    return (lambda: store.start_run(idem, run_id, "agent.turn", key, now_ms(), text, **later),
            lambda: store.context(key, 39),
            lambda: store.append_turn(key, text, text, run_id, model="echo/echo"),
            lambda: store.finish_run(idem, "ok", None, {"status": "ok", "summary": text}))


def turns(store: Any, n: int, sessions: int) -> dict[str, float]:
    """CPU seconds per phase over `n` turns."""
    spent = dict.fromkeys(PHASES, 0.0)
    for i in range(n):
        for phase, step in zip(PHASES, steps(store, i, sessions), strict=True):
            t = time.process_time()
            step()
            spent[phase] += time.process_time() - t
    return spent


def burst(root: Path, n: int, sessions: int, group: int) -> tuple[float, dict[str, float], dict[str, float]]:
    """CPU per turn, statements per turn (by database) and WAL pages per turn (by file), over `n` turns written
    `group` at a time after as many turns of warm-up."""
    store = AgentStore(db_path(root, "main"), "main", root)
    store.checkpointer.stop()  # every page a turn writes stays in the WAL, where it is counted
    conns = {"agent": store.db, "runs": store.side, "state": store.state}
    statements: collections.Counter[str] = collections.Counter()

    def turns(first: int) -> None:
        batch = [steps(store, i, sessions, pending=PENDING) for i in range(first, first + group)]
        for start, *_rest in batch:
            start()
        if PENDING:
            store.group_runs([])  # their starts, committed before any model call
        for _start, context, _append, _finish in batch:
            context()
        store.group([append for _start, _context, append, _finish in batch])
        store.group_runs([finish for *_rest, finish in batch])

    for first in range(0, n, group):
        turns(first)
    for db in conns.values():
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA wal_autocheckpoint=0")  # the WAL keeps every frame written, counted below
    for name, db in conns.items():
        db.set_trace_callback(lambda _sql, name=name: statements.update([name]))
    cpu = time.process_time()
    for first in range(n, 2 * n, group):
        turns(first)
    cpu = time.process_time() - cpu
    for db in conns.values():
        db.set_trace_callback(None)
    pages = {name: conns[name].execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] / n
             for name in ("agent", "runs")}
    store.close()
    return cpu / n * 1e6, {name: statements[name] / n for name in conns}, pages


def line(name: str, values: list[float], unit: str) -> None:
    print(f"  {name:<34} median {statistics.median(values):8.1f} {unit}  min {min(values):8.1f}  "
          f"max {max(values):8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--group", type=int, default=3, help="turns per group commit in the burst (the worker's under "
                                                        "bench/channels.py's Telegram burst: 2-3)")
    args = ap.parse_args()
    per_turn: dict[str, dict[str, list[float]]] = {"upstream": {p: [] for p in (*PHASES, "total")},
                                                    "floor": {p: [] for p in (*PHASES, "total")}}
    opened: dict[str, list[float]] = {"fresh": [], "fresh wall": [], "existing": []}
    grouped: dict[str, list[float]] = collections.defaultdict(list)
    for _rep in range(args.reps):
        with tempfile.TemporaryDirectory(prefix="bench-agent-store-") as tmp:
            cpu, statements, pages = burst(Path(tmp), args.turns, args.sessions, args.group)
            grouped["cpu"].append(cpu)
            for name, value in statements.items():
                grouped[f"statements {name}"].append(value)
            for name, value in pages.items():
                grouped[f"WAL pages {name}"].append(value)
        with tempfile.TemporaryDirectory(prefix="bench-agent-store-") as tmp:
            root = Path(tmp)
            t, c = time.perf_counter(), time.process_time()
            store = AgentStore(db_path(root, "main"), "main", root)
            opened["fresh"].append((time.process_time() - c) * 1000)
            opened["fresh wall"].append((time.perf_counter() - t) * 1000)
            for name, subject in (("upstream", store), ("floor", Floor(root / "floor" / "floor.sqlite"))):
                spent = turns(subject, args.turns, args.sessions)
                subject.close()
                for phase, cpu in spent.items():
                    per_turn[name][phase].append(cpu / args.turns * 1e6)
                per_turn[name]["total"].append(sum(spent.values()) / args.turns * 1e6)
            c = time.process_time()
            AgentStore(db_path(root, "main"), "main", root).close()
            opened["existing"].append((time.process_time() - c) * 1000)
    print(f"agent store, {args.turns} turns over {args.sessions} sessions, x{args.reps} (CPU per turn)")
    for name, title in (("upstream", "upstream's agent database"), ("floor", "floor: two plain tables")):
        print(title)
        for phase in (*PHASES, "total"):
            line(phase, per_turn[name][phase], "us")
    print("opening the agent store (agent database, runs side file, lease in the shared database)")
    line("fresh state dir (creates it), CPU", opened["fresh"], "ms")
    line("fresh state dir (creates it), wall", opened["fresh wall"], "ms")
    line("existing database, CPU", opened["existing"], "ms")
    print(f"a burst: {args.turns} turns written {args.group} at a time (group commit), after as many (per turn)")
    line("CPU", grouped["cpu"], "us")
    for name in sorted(k for k in grouped if k != "cpu"):
        line(name, grouped[name], "")


if __name__ == "__main__":
    main()
