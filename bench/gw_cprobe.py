"""The compiled probe client (bench/probe_client.c), built with gcc at bench time and run in its own process.

A Python client thread spends ~30 us per keep-alive round trip, more than the gateway's own work on a probe, so
its rate says more about the client than the server. This one costs a few microseconds; it runs the same loop
as `gw_lean.probe_loop` (write, read the whole answer by Content-Length, time it with clock_gettime) and its
results have the same shape, plus the client's own CPU seconds.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench_managers import Unavailable

SOURCE = Path(__file__).resolve().parent / "probe_client.c"


def build(into: Path | None = None, source: Path = SOURCE) -> Path:
    """Compile `source` (default: the client) into `into` (default: a new temp dir), named after it; Unavailable
    without gcc or on a failed build."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise Unavailable(f"no C compiler (gcc) for {source.name}")
    out = (into or Path(tempfile.mkdtemp(prefix="ocsb-cprobe-"))) / source.stem
    r = subprocess.run([gcc, "-O2", "-Wall", "-o", str(out), str(source)], capture_output=True, text=True)
    if r.returncode:
        raise Unavailable(f"compiling {source.name} failed: {r.stderr.strip()[-300:]}")
    return out


def probe_loop(binary: Path, port: int, path: str, seconds: float, method: str = "GET") -> dict[str, Any]:
    """`method path` back to back on one keep-alive connection for `seconds`, from the compiled client."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([str(binary), str(port), method, path, f"{seconds:g}"], capture_output=True,
                       timeout=seconds + 30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise Unavailable(f"compiled probe client exited {r.returncode}: {r.stderr.decode(errors='replace')[-300:]}")
    first, _, rest = r.stdout.partition(b"\n")
    n, wall_ns, reconnects, statuses = first.decode().split(" ")
    wall = int(wall_ns) / 1e9
    return {"latencyMs": [int(v) / 1e6 for v in rest.split()], "wallS": wall, "perS": int(n) / wall,
            "statuses": {int(s): int(k) for s, k in (p.split(":") for p in statuses.split(",") if p)},
            "reconnects": int(reconnects), "method": method, "path": path,
            "clientCpuS": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}
