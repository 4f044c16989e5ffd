"""What keeps a forked worker's pages shared with the fork server (issue 20: memory per worker)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import KINDS_DIR, Gateway, wait_for
from openclaw_sup.gateway.client import GatewayClient

HOLES = """
import ctypes, json
from openclaw_sup.workers.heapholes import HeapHoles
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.sbrk.restype = ctypes.c_void_p
holes = HeapHoles()
chunks = [libc.malloc(300) for _ in range(4000)]
for ptr in chunks[:-1:2]:
    libc.free(ptr)  # every other one: 2000 holes below a live chunk, none of them at the top of the heap
before = holes.free_inside()
top = libc.sbrk(0) - holes._libc.mallinfo2().keepcost  # where the heap's top chunk starts: above it, fresh memory
taken = holes.take()
after = holes.free_inside()
fresh = [libc.malloc(size) for size in (24, 300, 1000, 5000)]
print(json.dumps({"before": before, "taken": taken, "after": after, "below_top": [p for p in fresh if p < top]}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_holes_in_the_fork_servers_heap_are_taken_so_a_workers_mallocs_come_from_fresh_pages() -> None:
    run = subprocess.run([sys.executable, "-c", HOLES], capture_output=True, text=True, timeout=60, check=True)
    got = json.loads(run.stdout)
    assert got["before"] >= 2000 * 300, got
    assert got["taken"] >= 2000, got
    assert got["after"] < 4096, got
    assert got["below_top"] == [], "a malloc after take() reused a hole the fork server's pages hold"


POOLS = """
import gc, json, sys
gc.disable()
from openclaw_sup.workers.heapholes import HeapHoles, pool_free_blocks
length = 60 + len(sys.argv)  # not a constant: b"x" * 61 would be folded into one object
junk = [b"x" * length for _ in range(20000)]  # 96-byte blocks, ~170 per pool
del junk[::2]  # every other one freed: holes in every one of those pools
before = pool_free_blocks()
holes = HeapHoles()
taken = holes.take_blocks()
after = pool_free_blocks()
print(json.dumps({"before": before.get(96, 0), "after": after.get(96, 0), "taken": taken}))
"""


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's small-object allocator")
def test_free_blocks_in_the_small_object_pools_are_taken_so_a_workers_objects_fill_pools_of_its_own() -> None:
    run = subprocess.run([sys.executable, "-c", POOLS], capture_output=True, text=True, timeout=60, check=True)
    got = json.loads(run.stdout)
    assert got["before"] >= 10000, got
    assert got["taken"] >= 10000, got
    assert got["after"] < 200, "free 96-byte blocks left in pools shared with the workers"


RARE = """
import json, sys
from openclaw_sup.workers import registry
registry.preload("agent")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("email", "aiohttp"))))
"""


def test_the_agent_kind_preloads_no_module_only_a_model_call_uses() -> None:
    """The fork server holds what it preloads for its whole life: the HTTP client and the HTTP-date parser of a
    `retry-after` wait for the agent's first model call."""
    run = subprocess.run([sys.executable, "-c", RARE], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(run.stdout) == []


def test_a_worker_settles_when_quiet_never_while_it_serves_and_again_after_each_busy_spell(gateway_factory) -> None:
    """`when_settled` callbacks (the scheduler's and agent's SQLite memory) run once the worker is quiet: `settleMs`
    after `ready`, or after the end of the request that kept it busy past that; once per quiet spell."""
    gw = gateway_factory({"workers": {
        "idle": {"kind": "settler", "options": {"settleMs": 200}},
        "busy": {"kind": "settler", "options": {"settleMs": 1000, "holdsMs": [2500, 300], "gapMs": 2500}}}})
    gw.start()
    wait_for(lambda: "settler settled: served 0, running 0" in gw.log_text(), 10, what="the idle worker settled")
    wait_for(lambda: "settler settled: served 2, running 0" in gw.log_text(), 20, what="the busy worker settled twice")
    text = gw.log_text()
    assert "settler settled: served 1, running 0" in text, text[-2000:]
    assert text.index("settler hold done") < text.index("settler settled: served 1"), text[-2000:]
    time.sleep(1.5)
    assert gw.log_text().count("settler settled") == 3, "a worker settled again without a request in between"


SHRINK = """
import ctypes, json, sys
from pathlib import Path
from openclaw_sup.workers.scheduler.store import Store
sqlite = ctypes.CDLL("libsqlite3.so.0")
sqlite.sqlite3_memory_used.restype = ctypes.c_int64
store = Store(Path(sys.argv[1]) / "state" / "openclaw.sqlite")
store.jobs()
store.db.execute("SELECT count(*) FROM sqlite_schema").fetchall()
before = sqlite.sqlite3_memory_used()
store.release_memory()
print(json.dumps({"before": before, "after": sqlite.sqlite3_memory_used()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the system's libsqlite3, as Python's module uses")
def test_the_schedulers_store_gives_its_page_caches_back_once_settled(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-c", SHRINK, str(tmp_path)], capture_output=True, text=True, timeout=60,
                         check=True)
    got = json.loads(run.stdout)
    assert got["after"] < got["before"] - 64 * 1024, got


def _imported(gw: Gateway, module: str) -> bool:
    """Whether a process of the tree imported `module` (its -X importtime line in the output it shares)."""
    return any(line.split("|")[-1].strip() == module
               for line in gw.stdout.read_text(errors="replace").splitlines() if line.startswith("import time:"))


def test_an_on_demand_kind_is_imported_by_the_fork_server_on_its_first_use_not_at_boot(gateway_factory) -> None:
    """The browser (on demand by default) costs the fork server nothing until it is first used. The supervisor
    never imports a kind's module, so the import seen (by -X importtime) can only be the fork server's."""
    token = "settle-token-0123456789abcdef0123"
    gw = gateway_factory({"kinds": [], "onDemand": ["browser"]},
                         config={"gateway": {"auth": {"mode": "token", "token": token}}, "browser": {"headless": True}},
                         extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    gw.start()
    assert gw.worker("browser")["state"] == "idle"
    wait_for(lambda: _imported(gw, "openclaw_sup.workers.agent.service"), 5, what="the eager agent kind's import")
    assert not _imported(gw, "openclaw_sup.workers.browser.service"), "the fork server imported the idle browser"
    client = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=token, timeout=40)
    client.connect()
    try:
        assert client.request("browser.status")["state"] == "stopped"  # no Chromium: the worker itself answers
    finally:
        client.close()
    assert gw.worker("browser")["state"] == "running"
    wait_for(lambda: _imported(gw, "openclaw_sup.workers.browser.service"), 5, what="the browser kind's import")


def test_the_agent_store_closes_the_state_database_while_idle_and_opens_it_again_on_use(tmp_path) -> None:
    from openclaw_sup.config import statedb
    from openclaw_sup.workers.agent.store import AgentStore, db_path

    st = AgentStore(db_path(tmp_path, "main"), "main", tmp_path)
    st.release_memory()
    assert st._state is None, "the state database stayed open in an idle agent"
    held = "SELECT count(*) FROM agent_database_leases WHERE lease_id = ?"
    assert st.state.execute(held, (st.lease,)).fetchone() == (1,)  # opened again on use, the lease still held
    st.close()
    with statedb.open_state_db(statedb.state_db_path(tmp_path)) as db:
        assert db.execute(held, (st.lease,)).fetchone() == (0,), "close() left the lease behind"


WRITER = """
import sys
from pathlib import Path
from openclaw_sup.workers.agent.store import AgentStore, db_path
st = AgentStore(db_path(Path(sys.argv[1]), "main"), "main", Path(sys.argv[1]))
st.append("agent:main:main", "assistant", "written while the agent idled")
st.close()
"""


def test_an_idle_agent_store_closes_its_databases_and_sees_what_another_process_wrote_meanwhile(tmp_path) -> None:
    """Settled, the agent closes its own database and runs file too; what it knew as of the closed connection is not
    trusted after (SQLite's data_version is per connection), so another process's writes meanwhile are seen."""
    from openclaw_sup.workers.agent.store import AgentStore, db_path

    key = "agent:main:main"
    st = AgentStore(db_path(tmp_path, "main"), "main", tmp_path)
    st.append(key, "user", "asked before the agent idled")
    assert [m["text"] for m in st.history(key, 10, count=False)[0]] == ["asked before the agent idled"]
    st.release_memory()
    assert (st._db, st._side, st._state) == (None, None, None), "a connection stayed open in an idle agent"
    subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], capture_output=True, text=True, timeout=60,
                   check=True)
    rows = st.history(key, 10, count=False)[0]  # the recent window kept in memory: checked against the database
    assert [m["text"] for m in rows] == ["asked before the agent idled", "written while the agent idled"]
    assert st.history(key, 10)[1] == 2
    st.append(key, "user", "asked after")
    assert st.history(key, 10)[1] == 3
    st.close()


CHECKPOINT_WRITER = """
import sys, time
from pathlib import Path
from openclaw_sup.config import statedb
db = statedb.open_state_db(Path(sys.argv[1]))
db.execute("CREATE TABLE IF NOT EXISTS bench_fill (x BLOB)")
for _ in range(int(sys.argv[2])):
    with db.write():
        db.execute("INSERT INTO bench_fill VALUES (?)", (b"x" * 8000,))
print("written", flush=True)
sys.stdin.read()  # holds its connection (and the WAL) until told to go
"""


def _connections_to(path: Path) -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += os.readlink(fd) == str(path)
        except OSError:
            continue
    return count


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd")
def test_the_checkpointer_moves_the_wal_then_closes_its_connection_until_the_wal_is_written_again(tmp_path) -> None:
    """Its connection (~0.4 MB of SQLite memory for upstream's state database) is kept only while there is WAL to
    move: closed one round after a checkpoint found everything moved and nothing written since, opened again by
    the next writes."""
    from openclaw_sup.config import sqlitedb, statedb

    path = tmp_path / "state" / "openclaw.sqlite"
    path.parent.mkdir()
    statedb.open_state_db(path).close()
    cp = sqlitedb.Checkpointer(path, threshold=256 * 1024, interval_s=0.05)
    try:
        for burst in (1, 2):
            size = path.stat().st_size + 100 * 8000  # the writer never checkpoints: only a checkpoint grows the file
            writer = subprocess.Popen([sys.executable, "-c", CHECKPOINT_WRITER, str(path), "100"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                assert writer.stdout is not None and writer.stdout.readline() == "written\n"
                wait_for(lambda size=size: path.stat().st_size >= size, 10, what=f"burst {burst} moved")
                wait_for(lambda: _connections_to(path) == 0, 10, what=f"the connection closed after burst {burst}")
                time.sleep(0.3)  # rounds with nothing written: none opens it again
                assert _connections_to(path) == 0
            finally:
                writer.communicate("", timeout=30)
    finally:
        cp.stop()


LOOP_PAGES = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
import uvloop
from sup_test_kinds import resident_pages
from openclaw_sup.config import eventloop
plain = resident_pages(uvloop.new_event_loop())
loop = eventloop.new_event_loop()
lean = resident_pages(loop)
async def echo_through_a_stream() -> bool:
    async def answer(reader, writer):
        writer.write(await reader.readexactly(200_000))
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    sent = bytes(range(256)) * 782
    writer.write(sent[:200_000])
    got = await reader.readexactly(200_000)
    server.close()
    return got == sent[:200_000]
print(json.dumps({"plain": plain, "lean": lean, "echoed": loop.run_until_complete(echo_through_a_stream())}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and mincore on Linux")
def test_the_event_loops_untouched_read_buffer_takes_no_memory_and_reads_still_land_in_it() -> None:
    """uvloop zeroes its loop's 256 kB stream read buffer when the loop is made; the tree's loops give those pages
    back, and a stream read into the buffer afterwards gets the bytes sent."""
    run = subprocess.run([sys.executable, "-c", LOOP_PAGES, str(KINDS_DIR)], capture_output=True, text=True,
                         timeout=60, check=True)
    got = json.loads(run.stdout)
    resident, count = got["plain"]
    assert count >= 60 and resident == count, got  # what the check sees without giving the pages back
    assert got["lean"][0] <= 4, got
    assert got["echoed"] is True


def test_a_workers_event_loop_starts_with_its_read_buffer_given_back(gateway_factory) -> None:
    gw = gateway_factory({"workers": {"w": {"kind": "loop_pages"}}}).start()
    line = wait_for(lambda: next((m for m in gw.log_text().splitlines() if "loop pages resident" in m), None), 10,
                    what="the worker's report")
    resident, count = (int(w) for w in line.split()[-3::2])
    assert count >= 60 and resident <= 4, line


def start_file_pages(pid: int | str) -> int:
    """kB of a process's private read-only file mappings that it maps and still shares with the file (what
    loading and starting read), from its smaps."""
    total, counted = 0, False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                counted = len(fields) == 6 and fields[5].startswith("/") and fields[1][1] == "-" and fields[1][3] == "p"
            elif counted and fields[0] in ("Rss:", "Anonymous:"):
                total += int(fields[1]) if fields[0] == "Rss:" else -int(fields[1])
    return total


FILE_PAGES = """
import asyncio, hashlib, json, os, sqlite3, ssl, sys
import uvloop, zmq
sys.path.insert(0, sys.argv[1])
from test_worker_memory import start_file_pages
from openclaw_sup.config import filepages
ssl.create_default_context()
before = start_file_pages("self")
relocated = sum(int(line.split()[1]) for line in open("/proc/self/smaps") if line.startswith("Anonymous:"))
dropped = filepages.drop()
after = start_file_pages("self")
kept = sum(int(line.split()[1]) for line in open("/proc/self/smaps") if line.startswith("Anonymous:"))
# every library's code and relocated pointers still work: a dropped page is mapped again, a relocated one kept
ctx = zmq.Context()
a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
a.bind("inproc://x"); b.connect("inproc://x"); a.send(b"ping")
async def main():
    await asyncio.sleep(0.01)
    return b.recv()
works = [hashlib.sha256(b"x").hexdigest()[:8], sqlite3.connect(":memory:").execute("select 1+1").fetchone()[0],
         ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED, uvloop.run(main()).decode()]
print(json.dumps({"before": before, "after": after, "dropped": dropped, "relocated": relocated, "kept": kept,
                  "works": works}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's pagemap and madvise")
def test_the_file_pages_a_start_read_are_unmapped_and_every_library_still_works_after() -> None:
    run = subprocess.run([sys.executable, "-c", FILE_PAGES, str(Path(__file__).parent)], capture_output=True,
                         text=True, timeout=60, check=True)
    got = json.loads(run.stdout)
    assert got["before"] >= 4096, got  # libpython, OpenSSL, SQLite, libzmq, uvloop: several MB read to start
    assert got["after"] < got["before"] / 4, got
    assert got["dropped"] >= (got["before"] - got["after"]) * 1024, got
    assert got["kept"] >= got["relocated"] - 64, "a page the process wrote (relocations, data) was dropped"
    assert got["works"] == [hashlib.sha256(b"x").hexdigest()[:8], 2, True, "ping"], got


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's pagemap and madvise")
def test_once_started_no_process_of_the_tree_keeps_the_file_pages_only_its_start_read(gateway_factory) -> None:
    """Loading the tree's libraries and starting reads several MB of their files (libpython, OpenSSL's provider
    tables, SQLite, libzmq, uvloop) that an idle process never runs again: the supervisor once serving and a worker
    once it settles unmap them (about 16 and 8 MB mapped here without, 6 with)."""
    reference = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                                "import asyncio, ssl, sqlite3, uvloop, zmq, orjson; "
                                "from test_worker_memory import start_file_pages; print(start_file_pages('self'))",
                                str(Path(__file__).parent)], capture_output=True, text=True, timeout=60, check=True)
    started = int(reference.stdout)
    gw = gateway_factory({"workers": {"w": {"kind": "settler", "options": {"settleMs": 200}}}}).start()
    wait_for(lambda: "settler settled" in gw.log_text(), 10, what="the worker settled")
    worker = gw.pids()["w"]
    assert worker is not None
    for name, pid in (("supervisor", gw.status()["supervisor"]["pid"]), ("worker", worker)):
        wait_for(lambda pid=pid: start_file_pages(pid) < started / 2, 10,
                 what=f"the {name} to map less than half of what a start reads ({started} kB)")
