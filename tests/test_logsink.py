"""The JSONL log sink: upstream's record layout, size rotation, redaction and throttling."""

from __future__ import annotations

import json
from pathlib import Path

from openclaw_sup.supervisor.logsink import LogSink, Redactor, mask


def test_records_follow_upstream_layout(tmp_path: Path) -> None:
    sink = LogSink(tmp_path / "gw.log", None)
    sink.write("warn", "hello there", subsystem="cron", worker="scheduler")
    sink.close()
    rec = json.loads((tmp_path / "gw.log").read_text())
    assert rec["0"] == rec["message"] == "hello there"
    assert rec["_meta"]["logLevelName"] == "WARN" and rec["_meta"]["logLevelId"] == 4
    assert rec["_meta"]["name"] == "cron" and rec["worker"] == "scheduler"
    assert rec["time"].endswith("+00:00")


def test_size_rotation_keeps_five_archives(tmp_path: Path) -> None:
    log = tmp_path / "gw.log"
    sink = LogSink(log, None, max_file_bytes=2000, rate=1e9, burst=1e9)
    for i in range(400):
        sink.write("info", f"line {i:04d} " + "x" * 40)
    sink.close()
    archives = sorted(p.name for p in tmp_path.iterdir())
    assert archives == ["gw.1.log", "gw.2.log", "gw.3.log", "gw.4.log", "gw.5.log", "gw.log"]
    assert all(p.stat().st_size <= 2000 + 400 for p in tmp_path.iterdir())
    newest = [json.loads(x)["message"] for x in log.read_text().splitlines()]
    assert newest[-1].startswith("line 0399")
    oldest_kept = json.loads((tmp_path / "gw.5.log").read_text().splitlines()[0])["message"]
    assert oldest_kept < newest[0]
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_secrets_are_masked_everywhere(tmp_path: Path) -> None:
    token = "sk-live-0123456789abcdefXYZ"
    sink = LogSink(tmp_path / "gw.log", None, redactor=Redactor([token, "pw12"]))
    sink.write("info", f"auth with {token} and password pw12")
    sink.close()
    text = (tmp_path / "gw.log").read_text()
    assert token not in text and "pw12" not in text
    assert mask(token) in text and mask(token) == "sk-liv...fXYZ" and mask("pw12") == "***"


def test_flooding_source_is_throttled_and_reported(tmp_path: Path) -> None:
    sink = LogSink(tmp_path / "gw.log", None, rate=10, burst=20)
    written = sum(sink.write("info", f"spam {i}", worker="noisy") for i in range(1000))
    assert sink.write("info", "calm", worker="quiet")
    sink.report_drops()
    sink.close()
    lines = [json.loads(x)["message"] for x in (tmp_path / "gw.log").read_text().splitlines()]
    assert written == 20
    assert "calm" in lines
    assert lines[-1] == "log rate limit: dropped 980 records from noisy"
