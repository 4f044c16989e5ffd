"""`openclaw-sup logs` against a running gateway (RPC `logs.tail`), the local file, and a gateway that restarts."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from conftest import BIN, Gateway, wait_for


@contextmanager
def follow(gw: Gateway, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([str(BIN), *gw.cli_args(), "logs", "--follow", *args], env=gw.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


class Lines:
    """A stream read line by line on a thread, so a test can wait for a line with a deadline."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                self.queue.put(line)
        self.queue.put(None)

    def until(self, needle: str, timeout: float) -> tuple[bool, str]:
        """Lines up to the first containing `needle`, within `timeout`: (found, everything read)."""
        deadline = time.monotonic() + timeout
        seen = ""
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            seen += line
            if needle in line:
                return True, seen
        return False, seen


def _gateway(gateway_factory) -> Gateway:
    return gateway_factory({}, config={"gateway": {"auth": {"token": "x" * 24}}}).start()


def test_logs_over_rpc_and_json(gateway_factory) -> None:
    gw = _gateway(gateway_factory)
    res = gw.run_cli("logs", "--plain", "--limit", "50")
    assert res.returncode == 0, res.stderr
    listening = [line for line in res.stdout.splitlines() if f"gateway listening on ws://127.0.0.1:{gw.port}" in line]
    assert listening, res.stdout
    parts = listening[0].split(" ", 3)
    assert parts[1] == "info" and parts[2] == "supervisor" and parts[0].startswith("20")
    assert "no gateway answered" not in res.stderr

    lines = [json.loads(line) for line in gw.run_cli("logs", "--json", "--limit", "3").stdout.splitlines()]
    assert lines[0]["type"] == "meta" and lines[0]["via"] == "rpc" and lines[0]["file"] == str(gw.log_file)
    assert all(rec["type"] == "log" and {"time", "level", "subsystem", "message"} <= rec.keys() for rec in lines[1:])
    assert len(lines) == 4

    no_creds = gw.run_cli("logs", "--url", f"ws://127.0.0.1:{gw.port}")
    assert no_creds.returncode == 2 and "requires explicit credentials" in no_creds.stderr


def test_follow_shows_a_new_line_quickly(gateway_factory) -> None:
    gw = _gateway(gateway_factory)
    with follow(gw, "--plain") as proc:
        out = Lines(proc.stdout)
        found, seen = out.until("gateway listening", 15)
        assert found, seen
        time.sleep(0.3)
        gw.signal(signal.SIGHUP)
        sent = time.monotonic()
        found, seen = out.until("config reload (SIGHUP", 1.5)
        assert found, f"no `config reload` line within 1.5 s of SIGHUP; read: {seen!r}"
        assert time.monotonic() - sent <= 1.5


def test_follow_reconnects_after_a_gateway_restart(gateway_factory) -> None:
    gw = _gateway(gateway_factory)
    with follow(gw, "--plain", "--interval", "200") as proc:
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        assert out.until("gateway listening", 15)[0]
        assert gw.stop() == 0
        assert err.until("reconnecting", 10)[0]
        gw.start()
        found, seen = err.until("[logs] gateway reconnected", 30)
        assert found, seen
        assert out.until("gateway listening", 10)[0], "lines written meanwhile are not lost"


def test_falls_back_to_the_local_file(gateway_factory) -> None:
    gw = _gateway(gateway_factory)
    assert gw.stop() == 0
    res = gw.run_cli("logs", "--plain", "--limit", "3")
    assert res.returncode == 0, res.stderr
    assert f"reading {gw.log_file}" in res.stderr
    assert res.stdout.splitlines()[-1].endswith("gateway stopped")
    lines = [json.loads(line) for line in gw.run_cli("logs", "--json", "--limit", "1").stdout.splitlines()]
    assert [r["type"] for r in lines] == ["notice", "meta", "log"] and lines[1]["via"] == "file"

    wait_for(lambda: not gw.control.exists(), 5, what="the control socket to go")
    follow_file = subprocess.Popen([str(BIN), "logs", "--follow", "--plain", "--limit", "1", "--interval", "100"],
                                   env=gw.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = Lines(follow_file.stdout)
        assert out.until("gateway stopped", 10)[0]
        with gw.log_file.open("a") as f:
            f.write(json.dumps({"time": "2030-01-01T00:00:00.000+00:00", "level": "warn", "subsystem": "test",
                                "worker": "channel:irc:a", "message": "appended by hand"}) + "\n")
        found, seen = out.until("appended by hand", 3)
        assert found, seen
        assert seen.splitlines()[-1] == "2030-01-01T00:00:00.000+00:00 warn test [channel:irc:a] appended by hand"
    finally:
        follow_file.kill()
        follow_file.wait()
        for stream in (follow_file.stdout, follow_file.stderr):
            if stream is not None:
                stream.close()
