"""The agent worker sends its `agent` and `chat` events only while a client receives them: a channel burst with no
client connected costs no event messages on the bus, a client that connects gets every event of the turns that
follow (the supervisor's word reaches the worker before anything that client asks), and once it leaves the events
stop again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from channel_servers import FakeTelegram

from conftest import Gateway, wait_for
from openclaw_sup.gateway.client import GatewayClient

TOKEN = "tg-listeners-token-0123456789"
BOT_TOKEN = "123456:listeners-bot-token"
TURNS = 30
CHATS = 3


def bus_sent(gw: Gateway, since: float) -> int:
    """The agent worker's bus message count as of a heartbeat after `since` (monotonic)."""
    def beat() -> int | None:
        row = gw.worker("agent")
        return row["busSent"] if row["heartbeatAgeS"] is not None and \
            time.monotonic() - row["heartbeatAgeS"] > since else None
    return wait_for(beat, 10, interval=0.05, what="an agent heartbeat")


def burst(gw: Gateway, tg: FakeTelegram, first: int) -> tuple[int, float]:
    """TURNS messages answered; the agent's bus messages meanwhile, per turn, and how long it took."""
    before, t0 = bus_sent(gw, time.monotonic()), time.monotonic()
    for i in range(first, first + TURNS):
        tg.push_text(7000 + i % CHATS, f"turn {i}")
    wait_for(lambda: len({t for _, t in tg.sent_texts() if t.startswith("turn ")}) >= first + TURNS, 60,
             what="every turn answered")
    elapsed = time.monotonic() - t0
    return bus_sent(gw, time.monotonic()) - before, elapsed


def test_events_flow_only_while_a_client_listens(gateway_factory: Any, tmp_path: Path) -> None:
    tg = FakeTelegram(BOT_TOKEN)
    try:
        gw = gateway_factory({"kinds": []}, config={
            "gateway": {"auth": {"mode": "token", "token": TOKEN}}, "agents": {"defaults": {"model": "echo/echo"}},
            "channels": {"telegram": {"botToken": BOT_TOKEN, "apiBaseUrl": tg.base_url, "dmPolicy": "open",
                                      "allowFrom": ["*"]}}}).start()
        wait_for(lambda: any(m == "getUpdates" for m, _ in tg.calls), 15, what="polling")

        unheard, took = burst(gw, tg, 0)
        # each turn: its answer to the channel worker; beside them only heartbeats (one a second) and log lines
        assert unheard <= TURNS + 2 * (took + 3) + 10, f"{unheard} bus messages for {TURNS} turns nobody watched"

        c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, timeout=20)
        c.connect()
        try:
            heard, _ = burst(gw, tg, TURNS)
            finals: set[str] = set()
            while len(finals) < TURNS:
                ev = c.next_event("chat", timeout=20)["payload"]
                if ev["state"] == "final" and ev["message"]["content"][0]["text"].startswith("turn "):
                    finals.add(ev["message"]["content"][0]["text"])
            assert finals == {f"turn {i}" for i in range(TURNS, 2 * TURNS)}
            # lifecycle start, assistant delta, chat delta, lifecycle end, chat final: five events and the answer
            assert heard >= 6 * TURNS, f"{heard} bus messages for {TURNS} turns a client watched"
        finally:
            c.close()

        wait_for(lambda: bus_sent(gw, time.monotonic()) is not None, 10)
        unheard_again, took = burst(gw, tg, 2 * TURNS)
        assert unheard_again <= TURNS + 2 * (took + 3) + 10, f"{unheard_again} bus messages after the client left"
    finally:
        tg.close()
