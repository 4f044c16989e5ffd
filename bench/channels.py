"""Channel bench: how fast a message goes through a channel worker (ingress queue -> agent -> outbox -> network).

Run: .venv/bin/python bench/channels.py [--dms 100] [--burst 500] [--reps 3]

A real gateway with the real agent worker on the offline echo provider (`echo/echo`), and the same network
peers as the tests (tests/channel_servers.py): a private ngircd on loopback, and the local Telegram Bot API
server. Measures, each printed as median / p90 / min / max over its samples:
1. IRC DM round trip: one user sends `--dms` DMs one after the other (dmPolicy open); time from the PRIVMSG
   leaving the client to the echo arriving back (client clock). The DMs are 0.55 s apart so the bot's IRC
   flood control (burst 10, then 2 lines/s) never delays a reply: this is the path, not the rate limit.
2. Telegram burst: `--burst` updates queued at once, from 50 chats; time until every one is answered, as
   messages per second, `--reps` times (a fresh gateway each time).
3. Telegram recovery: during a burst the worker is SIGKILLed; time from the kill to the next reply
   (supervisor restart + ingress replay + first turn), once per rep.
Figures depend on the machine's load (2 shared cores here): compare within one run.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from channel_servers import FakeTelegram, IrcClient, Ngircd

from conftest import Gateway, wait_for

TOKEN = "bench-channels-token-0123456789"
BOT_TOKEN = "1:bench-bot-token"
FLOOD_PAUSE_S = 0.55


def stats(name: str, values: list[float], unit: str) -> None:
    vals = sorted(values)
    p90 = vals[min(len(vals) - 1, int(len(vals) * 0.9))]
    print(f"{name:<34} n={len(vals):<4} median {statistics.median(vals):8.2f} {unit}  p90 {p90:8.2f}  "
          f"min {vals[0]:8.2f}  max {vals[-1]:8.2f}")


def gateway(root: Path, channels: dict[str, Any]) -> Gateway:
    cfg = {"gateway": {"auth": {"mode": "token", "token": TOKEN}}, "agents": {"defaults": {"model": "echo/echo"}},
           "channels": channels}
    return Gateway(root, {"kinds": []}, config=cfg).start()


def irc_round_trips(root: Path, n: int) -> list[float]:
    ircd = Ngircd(root / "ngircd").start()
    gw = gateway(root / "gw-irc", {"irc": {"host": "127.0.0.1", "port": ircd.port, "nick": "benchbot",
                                           "dmPolicy": "open", "allowFrom": ["*"]}})
    try:
        user = IrcClient(ircd.port, "bencher")
        wait_for(lambda: "benchbot" in _whois(user), 20, what="the bot online")
        out = []
        for i in range(n):
            time.sleep(FLOOD_PAUSE_S)  # let the bot's flood-control bucket refill: measure the path, not the limit
            before = len(user.messages_from("benchbot"))
            t0 = time.perf_counter()
            user.privmsg("benchbot", f"ping {i}")
            wait_for(lambda b=before: len(user.messages_from("benchbot")) > b, 10, interval=0.0005)
            out.append((time.perf_counter() - t0) * 1000)
        user.close()
        return out
    finally:
        gw.stop()
        ircd.kill()


def _whois(user: IrcClient) -> str:
    user.send("ISON benchbot")
    time.sleep(0.2)
    return " ".join(ln for ln in user.snapshot() if " 303 " in ln)


def telegram_burst(root: Path, burst: int, kill: bool) -> tuple[float, float | None]:
    tg = FakeTelegram(BOT_TOKEN)
    gw = gateway(root, {"telegram": {"botToken": BOT_TOKEN, "apiBaseUrl": tg.base_url, "dmPolicy": "open",
                                     "allowFrom": ["*"]}})
    try:
        wait_for(lambda: any(m == "getUpdates" for m, _ in tg.calls), 15, what="polling")
        t0 = time.perf_counter()
        for i in range(burst):
            tg.push_text(1000 + i % 50, f"m{i}")
        gap = None
        if kill:
            wait_for(lambda: len(tg.sent) >= burst // 3, 60)
            os.kill(gw.worker("channel:telegram:default")["pid"], signal.SIGKILL)
            t_kill, n_kill = time.perf_counter(), len(tg.sent)
            wait_for(lambda: len(tg.sent) > n_kill + 1, 30, interval=0.001)
            gap = (time.perf_counter() - t_kill) * 1000
        wait_for(lambda: len({t for _, t in tg.sent_texts()}) >= burst, 120, interval=0.005)
        return burst / (time.perf_counter() - t0), gap
    finally:
        gw.stop()
        tg.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dms", type=int, default=100)
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-channels-") as tmp:
        root = Path(tmp)
        stats("IRC DM round trip", irc_round_trips(root / "irc", args.dms), "ms")
        rates, gaps = [], []
        for rep in range(args.reps):
            rates.append(telegram_burst(root / f"tg{rep}", args.burst, kill=False)[0])
            gap = telegram_burst(root / f"tgk{rep}", args.burst, kill=True)[1]
            gaps.append(gap or 0.0)
        stats(f"Telegram burst of {args.burst}", rates, "msg/s")
        stats("Telegram SIGKILL -> next reply", gaps, "ms")


if __name__ == "__main__":
    main()
