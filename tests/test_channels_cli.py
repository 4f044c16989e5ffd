"""Channel status through both CLIs: ours (`openclaw-sup channels status`) and the real upstream `openclaw channels
status --probe` (conformance.md: env URL + token), which must exit 0 and list our channel accounts."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from channel_servers import FakeTelegram

from conftest import Gateway, run_openclaw, wait_for

TOKEN = "channels-cli-token-0123456789"
BOT_TOKEN = "77:cli-secret-bot-token"


@pytest.fixture
def gw(gateway_factory: Any) -> Any:
    tg = FakeTelegram(BOT_TOKEN)
    cfg = {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
           "channels": {"telegram": {"botToken": BOT_TOKEN, "apiBaseUrl": tg.base_url},
                        "irc": {"host": "127.0.0.1", "port": 9, "nick": "clibot"}, "webchat": {}}}
    gateway = gateway_factory({"kinds": []}, config=cfg).start()
    yield gateway
    gateway.stop()
    tg.close()


def real_cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return run_openclaw(gw, *args, token=TOKEN)


def test_real_openclaw_channels_status_probe_lists_our_accounts(gw: Gateway) -> None:
    wait_for(lambda: "connected, works" in gw.run_cli("channels", "status", "--probe").stdout, 15,
             what="telegram connected")
    res = real_cli(gw, "channels", "status", "--probe")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    tg = next(ln for ln in lines if "Telegram default:" in ln)
    assert "running" in tg and "connected" in tg and "works" in tg and "bot:@claw_bot" in tg
    irc = next(ln for ln in lines if "default:" in ln and "rc default" in ln.lower())
    assert "disconnected" in irc and "probe failed" in irc
    assert BOT_TOKEN not in res.stdout


def test_our_cli_channels_status_and_config_only_fallback(gw: Gateway) -> None:
    out = gw.run_cli("channels", "status", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data["channelAccounts"]) == {"telegram", "irc", "webchat"}
    (webchat,) = data["channelAccounts"]["webchat"]
    assert webchat["running"] and webchat["connected"] and webchat["mode"] == "gateway"
    assert BOT_TOKEN not in out.stdout
    gw.stop()
    down = gw.run_cli("channels", "status")
    assert down.returncode == 0
    assert "showing config only" in down.stdout and "Telegram default: enabled, configured" in down.stdout
