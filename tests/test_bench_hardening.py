"""The quick parts of the hardening benches, run as they are shipped (bench/hostile.py, fuzz.py, soak.py):
what they report must say the gateway held. Their figures are for the benches' own runs, not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO

pytestmark = pytest.mark.live

BENCH = REPO / "bench"


def run_bench(tmp_path: Path, script: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    out = tmp_path / f"{script}.json"
    res = subprocess.run([sys.executable, str(BENCH / script), *args, "--out", str(out), "--txt",
                          str(tmp_path / f"{script}.txt")], cwd=BENCH, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return json.loads(out.read_text())


def test_hostile_quick(tmp_path: Path) -> None:
    data = run_bench(tmp_path, "hostile.py", "--connections", "400", "--attack", "8", "--quiet", "3",
                     "--addresses", "4")
    attack = data["phases"]["attack"]
    assert data["targets"]["goodClientServedThroughout"] is True, attack["failures"]
    assert not data["problems"] and not data["logErrors"]
    assert all(not sum(f.values()) for f in attack["failures"].values()), attack["failures"]
    assert all(data["phases"][p]["restartMs"] for p in ("before", "attack", "after"))
    assert attack["port"][-1]["refusedPerAddress"] > 0, "4 addresses x 32: the per-address cap was reached"
    before, after = data["phases"]["before"]["samples"][-1], data["phases"]["after"]["samples"][-1]
    assert after["fds"] <= before["fds"] + 4, "descriptors back to where they were"


def test_fuzz_quick(tmp_path: Path) -> None:
    data = run_bench(tmp_path, "fuzz.py", "--ws", "600", "--http", "150", "--seed", "7")
    assert data["problems"] == [], data["problems"]
    assert data["stdoutBytes"] == 0
    assert data["ws"]["outcomes"].get("request: answered, connection still serving", 0) > 100


def test_soak_quick(tmp_path: Path) -> None:
    data = run_bench(tmp_path, "soak.py", "--duration", "20", "--kill-every", "6")
    assert data["problems"] == [] and data["failed"] == {}, data["failed"]
    assert len(data["kills"]) >= 2
    assert sum(data["ok"].values()) > 200
