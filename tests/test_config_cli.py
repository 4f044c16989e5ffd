"""`openclaw-sup config get|set|unset|file|validate`, run as the real binary against a private state dir."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.live

BIN = Path(sys.executable).parent / "openclaw-sup"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.state = root / "state"
        self.home.mkdir()
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")},
                    "HOME": str(self.home), "OPENCLAW_STATE_DIR": str(self.state)}

    @property
    def config(self) -> Path:
        return self.state / "openclaw.json"

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Run:
        p = subprocess.run([str(BIN), *args], env={**self.env, **(env or {})}, capture_output=True, text=True,
                           timeout=60)
        return Run(p.returncode, p.stdout.strip(), p.stderr.strip())

    def write(self, cfg: dict[str, Any] | str) -> None:
        self.state.mkdir(exist_ok=True)
        self.config.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_file_honours_state_dir_profile_and_dev(cli: Cli) -> None:
    assert cli("config", "file").out == str(cli.config)
    assert cli("config", "file", "--json").json() == {"path": str(cli.config)}
    env = {"OPENCLAW_STATE_DIR": ""}
    assert cli("--profile", "work", "config", "file", env=env).out == str(cli.home / ".openclaw-work" / "openclaw.json")
    assert cli("--dev", "config", "file", env=env).out == str(cli.home / ".openclaw-dev" / "openclaw.json")


def test_get_prints_values_redacted(cli: Cli) -> None:
    cli.write('// comment\n{ gateway: { mode: "local", port: 18790, auth: { mode: "token", token: "s3cret" } },'
              ' channels: { telegram: { botToken: "123:abc", dmPolicy: "pairing" } } }')
    assert cli("config", "get", "gateway.port").out == "18790"
    assert cli("config", "get", "gateway.mode").out == "local"
    assert cli("config", "get", "gateway.mode", "--json").out == '"local"'
    assert cli("config", "get", "gateway.auth.token").out == "__OPENCLAW_REDACTED__"
    whole = cli("config", "get", "channels", "--json")
    assert whole.code == 0 and "123:abc" not in whole.out
    assert whole.json()["telegram"]["botToken"] == "__OPENCLAW_REDACTED__"


def test_get_missing_path_exits_1(cli: Cli) -> None:
    cli.write({"gateway": {"mode": "local"}})
    plain = cli("config", "get", "gateway.port")
    assert plain.code == 1 and plain.out == "" and plain.err == "Config path not found: gateway.port"
    as_json = cli("config", "get", "gateway.port", "--json")
    assert as_json.code == 1 and as_json.json() == {"error": "Config path not found: gateway.port"}


def test_set_parses_json5_else_raw_string(cli: Cli) -> None:
    cli.write({"gateway": {"mode": "local"}})
    assert cli("config", "set", "gateway.port", "19001").code == 0
    assert cli("config", "set", "gateway.controlUi.allowedOrigins", "['https://a']").code == 0
    assert cli("config", "set", "channels.irc.nick", "claw bot").code == 0
    data = json.loads(cli.config.read_text())
    assert data["gateway"]["port"] == 19001
    assert data["gateway"]["controlUi"]["allowedOrigins"] == ["https://a"]
    assert data["channels"]["irc"]["nick"] == "claw bot"
    strict = cli("config", "set", "channels.irc.realname", "not json", "--strict-json")
    assert strict.code == 1 and "Failed to parse JSON5 value" in strict.err


def test_set_writes_atomically_with_backup(cli: Cli) -> None:
    cli.write('{ gateway: { mode: "local" } }  // json5 source')
    original = cli.config.read_bytes()
    assert cli("config", "set", "gateway.port", "19002").code == 0
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    bak = cli.state / "openclaw.json.bak"
    assert bak.read_bytes() == original and stat.S_IMODE(bak.stat().st_mode) == 0o600
    assert json.loads(cli.config.read_text()) == {"gateway": {"mode": "local", "port": 19002}}
    assert sorted(p.name for p in cli.state.iterdir()) == ["openclaw.json", "openclaw.json.bak"]


def test_set_no_change_leaves_file_byte_identical(cli: Cli) -> None:
    cli.write('{ gateway: { mode: "local", port: 19003 } }  // kept as written')
    before = cli.config.read_bytes()
    run = cli("config", "set", "gateway.port", "19003")
    assert run.code == 0 and run.out == "No change"
    assert cli.config.read_bytes() == before and not (cli.state / "openclaw.json.bak").exists()


def test_set_keeps_env_references(cli: Cli) -> None:
    cli.write({"gateway": {"mode": "local", "auth": {"token": "${GW_TOKEN}"}}})
    assert cli("config", "set", "gateway.port", "19004", env={"GW_TOKEN": "from-env"}).code == 0
    assert json.loads(cli.config.read_text())["gateway"]["auth"]["token"] == "${GW_TOKEN}"


def test_set_rejects_invalid_and_keeps_the_file(cli: Cli) -> None:
    cli.write({"gateway": {"mode": "local"}})
    before = cli.config.read_bytes()
    run = cli("config", "set", "gateway.port", "70000")
    assert run.code == 1
    assert run.err.startswith(f"Config write rejected: {cli.config}:")
    assert "gateway.port: must be between 1 and 65535 (got 70000)" in run.err
    typo = cli("config", "set", "gateway.prot", "1")
    assert typo.code == 1 and 'did you mean "port"?' in typo.err
    assert cli.config.read_bytes() == before


@pytest.mark.parametrize(("path", "value", "hint"), [
    ("gateway.port", "19005", "Restart the gateway to apply."),
    ("channels.telegram.dmPolicy", "pairing", "Change will apply without restarting the gateway."),
    ("gateway.reload.mode", "hot", "No gateway restart needed."),
    ("logging.level", "debug", "Change will apply without restarting the gateway."),
    ("plugins.entries.demo.enabled", "true", "Restart the gateway to apply."),
])
def test_set_prints_the_restart_hint(cli: Cli, path: str, value: str, hint: str) -> None:
    cli.write({"gateway": {"mode": "local"}, "channels": {"telegram": {"botToken": "1:a"}}})
    run = cli("config", "set", path, value)
    assert run.code == 0, run.err
    assert run.out == f"Updated {path}. {hint}"


def test_hint_follows_the_new_reload_mode(cli: Cli) -> None:
    cli.write({"gateway": {"mode": "local", "reload": {"mode": "restart"}}, "channels": {"irc": {"nick": "a"}}})
    assert cli("config", "set", "channels.irc.nick", "b").out.endswith("Restart the gateway to apply.")


def test_unset(cli: Cli) -> None:
    cli.write({"gateway": {"mode": "local", "port": 19006}, "hooks": {"enabled": True, "token": "h" * 32}})
    run = cli("config", "unset", "gateway.port")
    assert run.code == 0 and run.out == "Removed gateway.port. Restart the gateway to apply."
    assert cli("config", "unset", "hooks").out == "Removed hooks. Change will apply without restarting the gateway."
    missing = cli("config", "unset", "gateway.port")
    assert missing.code == 1 and missing.err == "Config path not found: gateway.port"
    dropped = cli("config", "unset", "gateway.mode")
    assert dropped.code == 1 and "drop gateway.mode" in dropped.err
    assert json.loads(cli.config.read_text()) == {"gateway": {"mode": "local"}}


def test_validate(cli: Cli) -> None:
    assert cli("config", "validate").code == 0
    cli.write({"gateway": {"mode": "local"}, "plugins": {}, "channels": {"whatsapp": {}}})
    ok = cli("config", "validate", "--json")
    assert ok.code == 0
    body = ok.json()
    assert body["valid"] is True and body["path"] == str(cli.config) and body["errors"] == []
    assert {n["path"] for n in body["notices"]} == {"plugins", "channels.whatsapp"}
    cli.write({"gateway": {"mode": "local", "bind": "everywhere", "auth": {"token": 73195824}}})
    bad = cli("config", "validate", "--json")
    assert bad.code == 1
    body = bad.json()
    assert body["valid"] is False
    assert [e["path"] for e in body["errors"]] == ["gateway.bind", "gateway.auth.token"]
    human = cli("config", "validate")
    assert human.code == 1 and human.err.startswith(f"Invalid config at {cli.config}:")
    problems = human.err.removeprefix(f"Invalid config at {cli.config}:")
    assert "  - gateway.bind: must be one of" in problems and "(got ***)" in problems
    assert "73195824" not in problems and "73195824" not in bad.out


def test_validate_reports_a_parse_error(cli: Cli) -> None:
    cli.write("{ gateway: ")
    run = cli("config", "validate", "--json")
    assert run.code == 1 and "not valid JSON5" in run.json()["errors"][0]["message"]
