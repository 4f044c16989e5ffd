"""Schema validation, redaction, loading and the dotted-path helpers of config/."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from openclaw_sup.config.document import load_config, read_config, start_block_reason
from openclaw_sup.config.loader import ConfigError, load_json5
from openclaw_sup.config.schema import REDACTED, default_for, redact, validate
from openclaw_sup.config.store import (
    ConfigPathNotFound,
    get_path,
    parse_path,
    set_path,
    unset_path,
    write_config_atomic,
)


def errors(cfg: dict[str, Any]) -> dict[str, str]:
    return {i.path: i.line() for i in validate(cfg).errors}


def test_a_full_valid_config_has_no_errors() -> None:
    cfg = {
        "$schema": "https://openclaw.ai/config.json",
        "gateway": {
            "mode": "local", "port": 18789, "bind": "custom", "customBindHost": "192.168.1.5",
            "auth": {"mode": "token", "token": "t0k", "rateLimit": {"maxAttempts": 10, "windowMs": 60000,
                                                                   "lockoutMs": 300000, "exemptLoopback": True}},
            "tailscale": {"mode": "serve"}, "controlUi": {"enabled": True, "allowedOrigins": ["https://x"]},
            "remote": {"url": "ws://h:1", "transport": "direct", "remotePort": 18789},
            "reload": {"mode": "hybrid", "debounceMs": 300}, "tls": {"enabled": False},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}, "responses": {"enabled": False}}},
            "tools": {"allow": ["a"], "deny": []}, "nodes": {"anything": 1}, "trustedProxies": ["10.0.0.1"],
        },
        "logging": {"level": "debug", "consoleLevel": "warn", "maxFileBytes": 1024, "consoleStyle": "json",
                    "redactPatterns": ["sk-.*"]},
        "cron": {"enabled": True, "webhookToken": "w", "sessionRetention": False,
                 "failureAlert": {"enabled": True, "after": 2, "mode": "announce", "channel": "telegram"}},
        "agents": {"defaults": {"heartbeat": {"every": "30m", "activeHours": {"start": "08:00", "end": "24:00"},
                                              "directPolicy": "block", "timeoutSeconds": 30},
                                "model": {"primary": "a/b", "fallbacks": ["c/d"]}, "workspace": "~/w",
                                "somethingElse": {"x": 1}},
                   "list": [{"id": "main"}]},
        "browser": {"enabled": True, "cdpUrl": "ws://127.0.0.1:9222", "extraArgs": ["--x"],
                    "profiles": {"work": {"cdpPort": 18800, "color": "#FF4500"}}},
        "hooks": {"enabled": True, "token": "h", "path": "/hooks", "mappings": [{"match": {}}]},
        "models": {"mode": "merge", "providers": {"local": {"baseUrl": "http://x", "apiKey": "k",
                                                             "api": "openai-completions", "models": []}}},
        "channels": {
            "defaults": {"groupPolicy": "allowlist"},
            "telegram": {"botToken": "1:a", "dmPolicy": "open", "allowFrom": ["*"],
                         "groups": {"-100": {"requireMention": True, "tools": {"deny": ["exec"]}}},
                         "accounts": {"second": {"botToken": "2:b", "dmPolicy": "pairing"}}},
            "irc": {"host": "irc.libera.chat", "port": 6697, "tls": True, "nick": "claw",
                    "sasl": {"username": "u", "password": "p"}, "channels": ["#a"]},
            "webchat": {"enabled": True},
        },
    }
    report = validate(cfg)
    assert report.ok, report.format("x")


def test_errors_name_path_value_and_reason() -> None:
    found = errors({"gateway": {"port": 70000, "bind": "everywhere", "mode": "cloud"}})
    assert found["gateway.port"] == "  - gateway.port: must be between 1 and 65535 (got 70000)"
    assert 'must be one of "loopback"' in found["gateway.bind"] and '(got "everywhere")' in found["gateway.bind"]
    assert '(got "cloud")' in found["gateway.mode"]


def test_wrong_types_are_reported() -> None:
    found = errors({"gateway": {"port": "18789", "auth": {"rateLimit": {"exemptLoopback": "yes"}}},
                    "logging": {"maxFileBytes": 0}, "cron": {"enabled": 1}})
    assert "expected an integer" in found["gateway.port"]
    assert "expected true or false" in found["gateway.auth.rateLimit.exemptLoopback"]
    assert "must be >= 1" in found["logging.maxFileBytes"]
    assert "expected true or false (got 1)" in found["cron.enabled"]


def test_unknown_upstream_sections_are_notices_not_errors() -> None:
    cfg = {"gateway": {"mode": "local"}, "plugins": {"entries": {}}, "skills": {}, "mcp": {}, "session": {},
           "messages": {}, "tools": {}, "talk": {}, "ui": {}, "discovery": {}, "identity": {}, "bindings": [],
           "env": {}, "wizard": {}, "meta": {}, "commands": {}, "approvals": {}, "update": {}, "nodes": {},
           "web": {}, "audio": {}, "routing": {}, "$schema": "x"}
    report = validate(cfg)
    assert report.ok
    assert {n.path for n in report.notices} >= {"plugins", "skills", "mcp", "web", "$schema"}


def test_other_channel_ids_are_accepted_with_a_notice() -> None:
    report = validate({"channels": {"whatsapp": {"token": "x", "whatever": 1}}})
    assert report.ok
    assert [n.path for n in report.notices] == ["channels.whatsapp"]


def test_unknown_keys_inside_a_section_are_errors_with_a_suggestion() -> None:
    found = errors({"gateway": {"prot": 1}, "hooks": {"enabeld": True}, "gatewya": {}})
    assert 'unknown key; did you mean "port"?' in found["gateway.prot"]
    assert 'did you mean "enabled"?' in found["hooks.enabeld"]
    assert 'unknown top-level key; did you mean "gateway"?' in found["gatewya"]


def test_bind_custom_rules() -> None:
    assert "required when gateway.bind is custom" in errors({"gateway": {"bind": "custom"}})[
        "gateway.customBindHost"]
    for alias in ("0.0.0.0", "localhost"):
        assert "not allowed" in errors({"gateway": {"bind": "custom", "customBindHost": alias}})[
            "gateway.customBindHost"]
    assert "IPv4" in errors({"gateway": {"customBindHost": "example.com"}})["gateway.customBindHost"]


def test_open_dm_policy_requires_wildcard() -> None:
    found = errors({"channels": {"telegram": {"dmPolicy": "open", "allowFrom": ["123"]}}})
    assert ('channels.telegram.dmPolicy="open" requires channels.telegram.allowFrom to include "*"'
            in found["channels.telegram.allowFrom"])
    found = errors({"channels": {"irc": {"accounts": {"b": {"dmPolicy": "open"}}}}})
    assert "channels.irc.accounts.b.allowFrom" in found
    assert errors({"channels": {"telegram": {"dmPolicy": "open", "allowFrom": ["*"]}}}) == {}


def test_heartbeat_browser_hooks_cron_formats() -> None:
    found = errors({
        "agents": {"defaults": {"heartbeat": {"every": "soon", "activeHours": {"start": "24:00", "end": "25:00"}}}},
        "browser": {"cdpUrl": "ftp://x", "profiles": {"Bad Name": {"cdpPort": 1}}},
        "hooks": {"path": "/"},
        "cron": {"sessionRetention": "forever", "failureAlert": "yes"},
    })
    assert "invalid duration" in found["agents.defaults.heartbeat.every"]
    assert "start cannot be 24:00" in found["agents.defaults.heartbeat.activeHours.start"]
    assert "HH:MM" in found["agents.defaults.heartbeat.activeHours.end"]
    assert "browser.cdpUrl must be http(s) or ws(s)" in found["browser.cdpUrl"]
    assert "invalid name" in found["browser.profiles.Bad Name"]
    assert 'must not be "/"' in found["hooks.path"]
    assert "invalid duration" in found["cron.sessionRetention"]
    assert "expected false or an object" in found["cron.failureAlert"]
    assert errors({"agents": {"defaults": {"heartbeat": {"every": "0m"}}}, "cron": {"failureAlert": False}}) == {}


def test_secrets_are_masked_in_error_values() -> None:
    found = errors({"gateway": {"auth": {"token": 12345678, "pasword": "hunter2"}},
                    "channels": {"telegram": {"botToken": ["leak-me"]}}, "hooks": {"tokne": "s3cret"}})
    text = "\n".join(found.values())
    for leak in ("12345678", "hunter2", "leak-me"):
        assert leak not in text
    assert "(got ***)" in found["gateway.auth.token"]


def test_redact_replaces_every_secret() -> None:
    cfg = {"gateway": {"auth": {"token": "a", "password": "b"}, "port": 1},
           "channels": {"telegram": {"botToken": "c", "accounts": {"x": {"botToken": "d"}}},
                        "irc": {"sasl": {"password": "e"}}},
           "models": {"providers": {"p": {"apiKey": "f", "baseUrl": "http://keep"}}},
           "plugins": {"entries": {"z": {"config": {"apiKey": "g", "secret": "h", "webhookToken": "i"}}}}}
    out = json.dumps(redact(cfg))
    for leak in '"a"', '"b"', '"c"', '"d"', '"e"', '"f"', '"g"', '"h"', '"i"':
        assert leak not in out
    assert out.count(REDACTED) == 9 and "http://keep" in out and cfg["gateway"]["auth"]["token"] == "a"


def test_defaults_are_declared() -> None:
    assert default_for("gateway.reload.mode") == "hybrid"
    assert default_for("gateway.port") == 18789
    assert default_for("hooks.path") == "/hooks"
    assert default_for("channels.telegram.accounts.x.dmPolicy") == "pairing"


def test_load_config_raises_the_upstream_text(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.json"
    path.write_text('// json5\n{ gateway: { mode: "local", port: 0, }, plugins: {} }')
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert str(exc.value) == f"Invalid config at {path}:\n  - gateway.port: must be between 1 and 65535 (got 0)"
    path.write_text('{ gateway: { mode: "local", auth: { token: "${TOK}" } }, channels: { irc: { nick: "${NICK}" } } }')
    config = load_config(path, env={"TOK": "from-env"})
    assert config.data["gateway"]["auth"]["token"] == "from-env"
    assert config.raw["gateway"]["auth"]["token"] == "${TOK}"
    assert config.missing_env == ("NICK",)


def test_start_guard(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.json"
    assert "set gateway.mode=local" in (start_block_reason(read_config(path, env={})) or "")
    path.write_text('{"gateway": {"port": 1}}')
    assert "missing gateway.mode" in (start_block_reason(read_config(path, env={})) or "")
    assert start_block_reason(read_config(path, env={}), allow_unconfigured=True) is None
    path.write_text('{"gateway": {"mode": "local"}}')
    assert start_block_reason(read_config(path, env={})) is None


def test_dotted_paths() -> None:
    data = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    assert parse_path("a.b[1].c") == parse_path("a.b.1.c") == ["a", "b", "1", "c"]
    assert parse_path(r"a\.b.c") == ["a.b", "c"]
    assert get_path(data, "a.b[1].c") == 2
    with pytest.raises(ConfigPathNotFound):
        get_path(data, "a.b[5]")
    new = set_path(data, "a.b.0.c", 9)
    assert new["a"]["b"][0]["c"] == 9 and data["a"]["b"][0]["c"] == 1
    assert set_path({}, "x.y[0]", "v") == {"x": {"y": ["v"]}}
    assert unset_path(data, "a.b[0]") == {"a": {"b": [{"c": 2}]}}
    with pytest.raises(ConfigPathNotFound, match=r"Config path not found: a\.zz\.y"):
        unset_path(data, "a.zz.y")


def test_atomic_write_keeps_backup_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "openclaw.json"
    write_config_atomic(path, {"gateway": {"mode": "local"}}, env={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    write_config_atomic(path, {"gateway": {"mode": "local", "port": 19000}}, env={})
    bak = path.with_name("openclaw.json.bak")
    assert bak.read_bytes() == first and stat.S_IMODE(bak.stat().st_mode) == 0o600
    assert load_json5(path) == {"gateway": {"mode": "local", "port": 19000}}
    assert sorted(p.name for p in path.parent.iterdir()) == ["openclaw.json", "openclaw.json.bak"]


def test_atomic_write_refuses_invalid_or_clobbering(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.json"
    write_config_atomic(path, {"gateway": {"mode": "local"}}, env={})
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"(?s)Config write rejected: .*gateway.port: must be between"):
        write_config_atomic(path, {"gateway": {"mode": "local", "port": -1}}, env={})
    with pytest.raises(ConfigError, match=r"would drop gateway\.mode"):
        write_config_atomic(path, {"gateway": {"port": 1}}, env={})
    with pytest.raises(ConfigError, match="redaction placeholder"):
        write_config_atomic(path, {"gateway": {"mode": "local", "auth": {"token": REDACTED}}}, env={})
    assert path.read_bytes() == before
    link = tmp_path / "link.json"
    os.symlink(path, link)
    with pytest.raises(ConfigError, match="symlink"):
        write_config_atomic(link, {"gateway": {"mode": "local"}}, env={})


@pytest.mark.parametrize(("text", "where", "words"), [
    ('{"gateway": {"port": 1}', "1:1", "unclosed object (add the missing })"),
    ('{\n  "a": 1\n  "b": 2\n}', "3:3", "expected ',' or '}', found '\"' (a missing comma?)"),
    ('{\n "a": 1,,\n}', "2:9", "unexpected ','"),
    ('{"a": }', "1:7", "expected a value, found '}'"),
    ('{}\n\n  ]', "3:3", "unexpected ']' after the end of the document"),
    ('{"a": "x', "1:7", "unclosed string"),
])
def test_json5_errors_name_line_column_and_reason_in_words(tmp_path: Path, text: str, where: str,
                                                           words: str) -> None:
    path = tmp_path / "openclaw.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_json5(path)
    message = str(err.value)
    assert message.startswith(f"Invalid config at {path}:{where}: not valid JSON5: {words}")
    assert "b'" not in message and "({" not in message and "None" not in message


def test_exec_and_node_settings_are_checked() -> None:
    ok = validate({"tools": {"exec": {"host": "node", "mode": "allowlist", "node": "nas", "timeoutSec": 30}},
                   "gateway": {"nodes": {"pairing": {"autoApproveLocal": False}, "commands": {"deny": ["x"]}}}})
    assert ok.ok and "tools" not in {n.path for n in ok.notices}
    bad = validate({"tools": {"exec": {"host": "cloud"}},
                    "gateway": {"nodes": {"pairing": {"autoApproveLocal": "no"}}}})
    found = {e.path: e.message for e in bad.errors}
    assert set(found) == {"tools.exec.host", "gateway.nodes.pairing.autoApproveLocal"}


@pytest.mark.live  # a fresh interpreter: what it imports is the point
def test_plain_json_is_read_without_the_json5_parser(tmp_path: Path) -> None:
    """A config the CLI wrote (plain JSON) is read without the JSON5 parser, which is imported only for JSON5
    proper; both read to the same values (an integer beyond 64 bits stays exact)."""
    files = {"plain": '{"gateway": {"mode": "local", "port": 19000}}',
             "json5": '// json5\n{ gateway: { mode: "local", port: 19000, }, }',
             "bigint": '{"gateway": {"mode": "local", "port": 19000}, "n": 12345678901234567890123}',
             "bigint5": '{gateway: {mode: "local", port: 19000}, n: 12345678901234567890123}'}
    probe = ("import sys; from pathlib import Path; from openclaw_sup.config.loader import load_json5; "
             "print(repr(load_json5(Path(sys.argv[1]))), 'pyjson5' in sys.modules)")
    seen = {}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        run = subprocess.run([sys.executable, "-c", probe, str(tmp_path / name)], capture_output=True, text=True,
                             check=True)
        seen[name] = run.stdout.strip()
    gateway = {"gateway": {"mode": "local", "port": 19000}}
    big = {**gateway, "n": 12345678901234567890123}
    assert seen == {"plain": f"{gateway!r} False", "json5": f"{gateway!r} True", "bigint": f"{big!r} False",
                    "bigint5": f"{big!r} True"}
