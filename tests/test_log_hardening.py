"""Logs under attack: the supervisor's lifecycle records survive a flood, refusals fold into counted lines,
and library output (aiohttp's errors on malformed requests) goes through the sink, redacted, not to stderr."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from pathlib import Path

from test_gateway_protocol import TOKEN, gw_config

from conftest import wait_for
from openclaw_sup.supervisor.liblog import mask_credentials, summarize
from openclaw_sup.supervisor.logsink import LogSink

HOOK_TOKEN = "hook-secret-token-0123456789abcdef"
STRANGER = "stranger-token-5555aaaa7777bbbb"


def hook_flood(port: int, requests: int) -> int:
    """Pipelined wrong-token `POST /hooks/wake` on one connection; returns how many 429s came back."""
    body = b'{"text":"x"}'
    one = (b"POST /hooks/wake HTTP/1.1\r\nHost: x\r\nX-OpenClaw-Token: wrong\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    throttled = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        for _ in range(requests // 200):
            s.sendall(one * 200)
            seen, data = 0, b""
            while seen < 200:
                chunk = s.recv(65536)
                if not chunk:
                    return throttled
                data += chunk
                seen = data.count(b"HTTP/1.1 ")
            throttled += data.count(b"HTTP/1.1 429 ")
    return throttled


def test_every_lifecycle_record_survives_a_flood_of_refusals(gateway_factory) -> None:
    cfg = {**gw_config(), "hooks": {"enabled": True, "token": HOOK_TOKEN}}
    g = gateway_factory({"workers": {"w": {"kind": "sleeper"}, "agent": {"kind": "fake_owner"}}}, config=cfg).start()
    results: list[int] = []
    floods = [threading.Thread(target=lambda: results.append(hook_flood(g.port, 9000))) for _ in range(3)]
    for t in floods:
        t.start()
    wait_for(lambda: "hook auth throttled" in g.log_text(), 30, what="the flood of refusals under way")
    killed = []
    for _ in range(3):
        wait_for(lambda: g.worker("w")["state"] == "running", 20, what="w running")
        pid = g.worker("w")["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        wait_for(lambda p=pid: g.worker("w")["pid"] not in (None, p), 20, what="w replaced")
    assert any(t.is_alive() for t in floods), "the kills happened during the flood"
    for t in floods:
        t.join(120)
    refused = sum(results)
    assert refused > 20_000, f"the flood was mostly throttled: {refused} x 429"
    lines = g.log_lines()
    text = "\n".join(r["message"] for r in lines)
    for pid in killed:
        assert f"worker w exited (pid {pid}, killed by SIGKILL)" in text
    spawned = [r["message"] for r in lines if r["message"].startswith("worker w spawned (pid ")]
    assert len(spawned) == 4
    for line in spawned:
        new = line.split("(pid ")[1].rstrip(")")
        assert f"worker w ready (pid {new}," in text

    def refusals_logged() -> list[dict]:
        """Records of the refusals, once every one is in the file, written or folded into a count."""
        recs = [r for r in g.log_lines() if "hook auth throttled" in r["message"]]
        counted = sum(r.get("repeated", 1) for r in recs)
        return recs if counted == refused else []

    recs = wait_for(refusals_logged, 10, what="every refusal counted in the log, written or folded")
    assert len(recs) < refused / 100, f"{len(recs)} lines for {refused} refusals"
    assert all(r["subsystem"] == "gateway" for r in recs)
    assert not any("log rate limit: dropped" in r["message"] and "supervisor" in r["message"] for r in lines)


MALFORMED = [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\x01\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-OpenClaw-Token: %s\x7f\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\x00\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: session=%s\x02\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Api-Key: %s\x1b\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuth\x01orization: Bearer %s\r\n\r\n",
    b"POST /hooks/wake HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nX-OpenClaw-Token: %s\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer %s\r\n\r\nzz\r\n",
]


def test_no_token_reaches_stdout_or_stderr_after_the_http_fuzz(gateway_factory) -> None:
    g = gateway_factory({"kinds": []}, config=gw_config()).start(True, "--verbose")
    assert g.proc is not None
    for token in (TOKEN, STRANGER):
        for template in MALFORMED:
            for _ in range(40):
                with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
                    s.sendall(template % token.encode())
                    s.settimeout(10)
                    while s.recv(65536):
                        pass
    wait_for(lambda: any(r["subsystem"].startswith("lib:aiohttp") for r in g.log_lines()), 10,
             what="aiohttp's errors in the log file")
    g.stop()
    out = g.stdout.read_text(errors="replace")
    log = g.log_file.read_text()
    for token in (TOKEN, STRANGER):
        assert token not in out, "a token reached stdout/stderr"
        assert token not in log, "a token reached the log file"
    assert "Traceback" not in out and "Traceback" not in log
    lib = [json.loads(x) for x in log.splitlines() if '"lib:' in x]
    assert lib and all("\n" not in r["message"] for r in lib)
    assert len(lib) < len(MALFORMED) * 80, "library errors are throttled and folded, not one per request"


def test_library_lines_are_one_line_and_masked() -> None:
    assert mask_credentials("b'Authorization: Bearer abc.def\\x01'") == "b'Authorization: Bearer ***\\x01'"
    assert mask_credentials("x-openclaw-token=zzz cookie: a=b") == "x-openclaw-token=*** cookie: ***"
    assert mask_credentials("sent Bearer qqq to it") == "sent Bearer *** to it"
    try:
        raise ValueError("bad\nthing")
    except ValueError as exc:
        line = summarize(type(exc), exc, exc.__traceback__)
    assert line.startswith("ValueError: bad thing (at test_log_hardening.py:") and "\n" not in line


def test_sink_folds_same_shaped_warnings_and_never_drops_kept_records(tmp_path: Path) -> None:
    sink = LogSink(tmp_path / "gw.log", None, rate=5, burst=5)
    for i in range(1000):
        sink.write("warn", f"refused 10.0.0.{i % 250}; retry-after={i}s", subsystem="gateway")
    for i in range(50):
        assert sink.write("info", f"worker w exited (pid {i})", keep=True)
    sink.report_drops()
    sink.close()
    recs = [json.loads(x) for x in (tmp_path / "gw.log").read_text().splitlines()]
    assert [r["message"] for r in recs if "exited" in r["message"]] == [f"worker w exited (pid {i})"
                                                                      for i in range(50)]
    refused = [r for r in recs if r["message"].startswith("refused")]
    assert len(refused) == 2 and refused[1]["repeated"] == 999
    assert refused[1]["message"] == "refused 10.0.0.249; retry-after=999s (repeated 999 more times)"
