"""Channel bench: how fast a message goes through a channel worker (ingress queue -> agent -> outbox -> network).

Run: .venv/bin/python bench/channels.py [--dms 100] [--burst 500] [--reps 3]
     .venv/bin/python bench/channels.py --refs ee05298 --real --real-burst 50   (only the Telegram bursts, side by side)

A real gateway with the real agent worker on the offline echo provider (`echo/echo`), and the same network
peers as the tests (tests/channel_servers.py): a private ngircd on loopback, and the local Telegram Bot API
server. Measures, each printed as median / p90 / min / max over its samples:
1. IRC DM round trip: one user sends `--dms` DMs one after the other (dmPolicy open); time from the PRIVMSG
   leaving the client to the echo arriving back (client clock). The DMs are 0.55 s apart so the bot's IRC
   flood control (burst 10, then 2 lines/s) never delays a reply: this is the path, not the rate limit.
2. Telegram burst: `--burst` updates queued at once, from 50 chats; time until every one is answered, as
   messages per second, `--reps` times (a fresh gateway each time); and the CPU each process of the tree spent
   per message meanwhile (steadier than the rate on a loaded machine: the agent worker's is its turn's cost).
3. Telegram recovery: during a burst the worker is SIGKILLed; time from the kill to the next reply
   (supervisor restart + ingress replay + first turn), once per rep.
4. With `--fleet N` (default 50): N channel accounts on one gateway, mixed kinds (Telegram, Discord, Slack against
   the loopback servers, Matrix against a real Synapse), idle after `--settle` s: the tree's PSS, the same
   gateway with no channel account, the marginal PSS per account ((tree - empty) / N) and each kind's worker PSS
   (median over its accounts).
5. Inbound rate per kind (`--burst` DMs through one account, dmPolicy open, every one answered by the echo
   agent), `--reps` times, beside the Telegram burst of 2. Matrix's DMs are sent while the account is stopped
   (`channels.stop`) and timed from `channels.start`: four clients sending one by one into Synapse are slower
   than the bot, so timing the sends would measure the clients.
6. With `--refs A,B`: the Telegram burst (rate and CPU per message of each process) of this tree and of each git
   ref (a regular install of that build, bench/bench_managers.py), interleaved rep by rep in this one run.
   `--max-concurrent N` sets `agents.defaults.maxConcurrent` for the bursts (builds before that key ignore it).
7. With `--real`: the same burst answered by the real OpenClaw gateway (2026.9.6, bench/gw_servers.py's `Real`: a
   fresh one and fresh state each rep), its Telegram account on the same local Bot API server (`apiRoot`), DMs
   open, one session per chat as ours, its agent on the loopback echo model (tests/upstream_state.py); rate and
   CPU per message of each of its processes beside ours, one table. It spends about a CPU second per message,
   so `--real-burst` (default `--burst`) keeps its share of the run in minutes. Skipped, saying why, when the
   real CLI is not installed and cannot be.
Figures depend on the machine's load (2 shared cores here): compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_common import CACHE, tree_memory
from bench_managers import Unavailable, ensure_install
from channel_servers import FakeTelegram, IrcClient, Ngircd
from discord_server import FakeDiscord
from gw_servers import Real, install_real
from slack_server import FakeSlack
from synapse_server import MatrixUser, Synapse
from upstream_state import EchoModel

import conftest
from conftest import Gateway, wait_for

TOKEN = "bench-channels-token-0123456789"
BOT_TOKEN = "1:bench-bot-token"
FLOOD_PAUSE_S = 0.55


def stats(name: str, values: list[float], unit: str) -> None:
    vals = sorted(values)
    p90 = vals[min(len(vals) - 1, int(len(vals) * 0.9))]
    print(f"{name:<34} n={len(vals):<4} median {statistics.median(vals):8.2f} {unit}  p90 {p90:8.2f}  "
          f"min {vals[0]:8.2f}  max {vals[-1]:8.2f}")


def gateway(root: Path, channels: dict[str, Any], env: dict[str, str] | None = None,
            max_concurrent: int | None = None) -> Gateway:
    defaults: dict[str, Any] = {"model": "echo/echo"}
    if max_concurrent:
        defaults["maxConcurrent"] = max_concurrent
    cfg = {"gateway": {"auth": {"mode": "token", "token": TOKEN}}, "agents": {"defaults": defaults},
           "channels": channels}
    return Gateway(root, {"kinds": []}, config=cfg, extra_env=env).start()


OPEN = {"dmPolicy": "open", "allowFrom": ["*"]}
MATRIX_OPEN = {"dm": {"policy": "open", "allowFrom": ["*"]}, "network": {"dangerouslyAllowPrivateNetwork": True},
               "autoJoin": "always"}


class Peers:
    """The loopback servers every account of a run talks to."""

    def __init__(self, root: Path) -> None:
        self.tg = FakeTelegram(BOT_TOKEN)
        self.dc = FakeDiscord(BOT_TOKEN, bucket_limit=10_000)
        self.sl = FakeSlack("xoxb-bench", "xapp-bench")
        self.hs = Synapse(root / "synapse").start()
        self.env = {"DISCORD_API_URL": self.dc.api_url, "SLACK_API_URL": self.sl.api_url}
        self._bots = 0

    def matrix_bot(self) -> dict[str, Any]:
        self._bots += 1
        name = f"benchbot{self._bots}"
        self.hs.register(name, "bench-password")
        return {"homeserver": self.hs.url, "userId": f"@{name}:localhost", "password": "bench-password"}

    def accounts(self, kind: str, n: int) -> dict[str, Any]:
        base = {"telegram": {"botToken": BOT_TOKEN, "apiBaseUrl": self.tg.base_url, **OPEN},
                "discord": {"token": BOT_TOKEN, **OPEN},
                "slack": {"botToken": "xoxb-bench", "appToken": "xapp-bench", **OPEN},
                "matrix": MATRIX_OPEN}[kind]
        return {**base, "accounts": {f"{kind[0]}{i}": (self.matrix_bot() if kind == "matrix" else {})
                                     for i in range(n)}}

    def close(self) -> None:
        self.tg.close()
        self.dc.close()
        self.sl.close()
        self.hs.kill()


def _rpc(gw: Gateway, method: str, params: dict[str, Any]) -> Any:
    from openclaw_sup.gateway.client import GatewayClient

    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    try:
        return c.request(method, params, timeout=30)
    finally:
        c.close()


def _connected(gw: Gateway) -> int:
    res = _rpc(gw, "channels.status", {})
    return sum(1 for rows in res["channelAccounts"].values() for a in rows if a.get("connected"))


def fleet(root: Path, peers: Peers, n: int, settle: float) -> None:
    kinds = ("telegram", "discord", "slack", "matrix")
    per = {k: n // len(kinds) + (1 if i < n % len(kinds) else 0) for i, k in enumerate(kinds)}
    empty = gateway(root / "empty", {}, peers.env)
    time.sleep(settle)
    base = tree_memory(empty.proc.pid)
    empty.stop()
    gw = gateway(root / "fleet", {k: peers.accounts(k, c) for k, c in per.items()}, peers.env)
    try:
        wait_for(lambda: _connected(gw) >= n, 120, interval=0.5, what=f"{n} accounts connected")
        time.sleep(settle)
        report_fleet(n, kinds, tree_memory(gw.proc.pid), base, "as booted")
        # Workers forked at boot come before the fork server warms aiohttp (workers/forkserver.py WARM), so each
        # imports it privately; a respawn forks from the warmed fork server and shares it.
        for w in gw.status()["workers"]:
            if w["name"].startswith("channel:") and w["pid"]:
                os.kill(w["pid"], signal.SIGKILL)
        time.sleep(1.0)
        wait_for(lambda: _connected(gw) >= n, 180, interval=0.5, what=f"{n} accounts back")
        time.sleep(settle)
        report_fleet(n, kinds, tree_memory(gw.proc.pid), base, "after one respawn each")
    finally:
        gw.stop()


def report_fleet(n: int, kinds: tuple[str, ...], mem: dict[str, Any], base: dict[str, Any], when: str) -> None:
    mb = 2 ** 20
    print(f"-- {when}")
    print(f"{'fleet of ' + str(n) + ' accounts':<34} tree PSS {mem['treePss'] / mb:7.1f} MB  (RSS "
          f"{mem['treeRss'] / mb:.1f} MB, {mem['procs']} processes); no account: tree PSS "
          f"{base['treePss'] / mb:.1f} MB")
    print(f"{'  marginal PSS per account':<34} {(mem['treePss'] - base['treePss']) / n / mb:7.2f} MB")
    for kind in (*kinds, "agent", "scheduler", "forkserver"):
        rows = [r["pss"] / mb for r in mem["detail"] if f"channel:{kind}:" in r["name"] or
                (kind in ("agent", "scheduler", "forkserver") and f": {kind} [" in r["name"])]
        if rows:
            print(f"{'  ' + kind + ' worker PSS':<34} n={len(rows):<4} median {statistics.median(rows):6.2f} MB  "
                  f"min {min(rows):6.2f}  max {max(rows):6.2f}")


def inbound_rate(root: Path, peers: Peers, kind: str, burst: int) -> float:
    """Messages per second from the first push to the last answer, through one account of `kind`."""
    cfg = {"telegram": {"botToken": BOT_TOKEN, "apiBaseUrl": peers.tg.base_url, **OPEN},
           "discord": {"token": BOT_TOKEN, **OPEN},
           "slack": {"botToken": "xoxb-bench", "appToken": "xapp-bench", **OPEN},
           "matrix": {**MATRIX_OPEN, **peers.matrix_bot()}}[kind]
    gw = gateway(root, {kind: cfg}, peers.env)
    users: list[MatrixUser] = []
    try:
        wait_for(lambda: _connected(gw) >= 1, 60, interval=0.2, what=f"{kind} connected")
        tag = root.name
        if kind == "matrix":
            bot = cfg["userId"]
            users = [MatrixUser(peers.hs, f"{tag}u{i}") for i in range(4)]
            rooms = [u.create_room(invite=[bot], direct=True) for u in users]
            for u, r in zip(users, rooms, strict=True):
                wait_for(lambda u=u, r=r: bot in u.members(r), 30, interval=0.1)

            def answered() -> int:
                return sum(len(u.messages_from(bot)) for u in users)
        else:
            before = {"telegram": lambda: len(peers.tg.sent), "discord": lambda: len(peers.dc.posted),
                      "slack": lambda: len(peers.sl.posted)}[kind]
            start = before()

            def answered() -> int:
                return before() - start
        if kind == "matrix":  # a client's sends into Synapse are slower than the bot: queue them while it is stopped
            _rpc(gw, "channels.stop", {"channel": "matrix"})
        t0 = time.perf_counter()
        for i in range(burst):
            text = f"{tag}-{i}"
            if kind == "telegram":
                peers.tg.push_text(1000 + i % 50, text)
            elif kind == "discord":
                peers.dc.push_dm(str(5000 + i % 50), text)
            elif kind == "slack":
                peers.sl.push_message(f"D{i % 50:04d}", f"U{i % 50:04d}", text)
            else:
                users[i % len(users)].send(rooms[i % len(users)], text)
        if kind == "matrix":
            t0 = time.perf_counter()
            _rpc(gw, "channels.start", {"channel": "matrix"})
        wait_for(lambda: answered() >= burst, 180, interval=0.005, what=f"{burst} {kind} answers")
        return burst / (time.perf_counter() - t0)
    finally:
        for u in users:
            u.close()
        gw.stop()


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


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each process of the tree, by its title without the profile (the supervisor's,
    `openclaw-gateway openclaw-sup` as upstream names its process, or `openclaw-sup: gateway` before: `gateway`)."""
    out = {}
    for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            name = " ".join(p.cmdline()).split(" [")[0].removeprefix("openclaw-sup: ")
            out["gateway" if name.startswith(("openclaw-gateway", "gateway")) else name] = t.user + t.system
    return out


def telegram_burst(root: Path, burst: int, kill: bool, cpu: dict[str, list[float]] | None = None,
                   max_concurrent: int | None = None) -> tuple[float, float | None]:
    """Messages per second (and, with `kill`, ms from the SIGKILL to the next reply); `cpu` gets each process's
    CPU microseconds per message. `max_concurrent`: `agents.defaults.maxConcurrent` (a build before it ignores it)."""
    tg = FakeTelegram(BOT_TOKEN)
    gw = gateway(root, {"telegram": {"botToken": BOT_TOKEN, "apiBaseUrl": tg.base_url, "dmPolicy": "open",
                                     "allowFrom": ["*"]}}, max_concurrent=max_concurrent)
    try:
        wait_for(lambda: any(m == "getUpdates" for m, _ in tg.calls), 15, what="polling")
        cpu0 = tree_cpu(gw.proc.pid)
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
        rate = burst / (time.perf_counter() - t0)
        if cpu is not None:
            for name, seconds in tree_cpu(gw.proc.pid).items():
                cpu.setdefault(name, []).append((seconds - cpu0.get(name, 0.0)) / burst * 1e6)
        return rate, gap
    finally:
        gw.stop()
        tg.close()


class RealTelegram(Real):
    """The real gateway with one Telegram account on the local Bot API server (upstream's `apiRoot`), DMs open
    to anyone, one session per chat (`agent:main:telegram:direct:<id>`, our key; upstream's default puts every DM in
    `agent:main:main`), and its agent on the loopback echo model: the same burst our gateway answers."""

    def __init__(self, root: Path, openclaw_bin: Path, tg: FakeTelegram, model: EchoModel) -> None:
        super().__init__(root, dict(os.environ), openclaw_bin)
        self.tg, self.model = tg, model

    def prepare(self) -> None:
        super().prepare()
        path = self.state / "openclaw.json"
        cfg = json.loads(path.read_text())
        cfg.update(models={"providers": {"loop": self.model.provider()}},
                   agents={"defaults": {"model": "loop/m1"}},
                   session={"dmScope": "per-channel-peer"},  # one session per chat, as ours keys them
                   channels={"telegram": {"enabled": True, "botToken": BOT_TOKEN, "apiRoot": self.tg.base_url,
                                          "dmPolicy": "open", "allowFrom": ["*"]}})
        path.write_text(json.dumps(cfg))


def real_cpu(gw: Real) -> dict[str, float]:
    """CPU seconds of each process of the real gateway's tree, by its command (`real: ...`)."""
    out: dict[str, float] = {}
    for p in gw.tree():
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            argv = p.cmdline()
            script = Path(argv[1]) if len(argv) > 1 and Path(argv[0]).name == "node" else None
            name = "real: " + (f"node {script.parent.name}/{script.name}" if script else " ".join(argv).strip())
            out[name] = out.get(name, 0.0) + t.user + t.system
    return out


def real_burst(root: Path, openclaw_bin: Path, burst: int, cpu: dict[str, list[float]], timeout: float) -> float:
    """The Telegram burst against the real gateway (a fresh one, fresh state): messages per second; `cpu` gets
    each process's CPU microseconds per message."""
    tg, model = FakeTelegram(BOT_TOKEN), EchoModel()
    gw = RealTelegram(root, openclaw_bin, tg, model)
    try:
        gw.start()
        asyncio.run(gw.wait_ready())
        wait_for(lambda: any(m == "getUpdates" for m, _ in tg.calls), 60, what="the real gateway polling")
        cpu0 = real_cpu(gw)
        t0 = time.perf_counter()
        for i in range(burst):
            tg.push_text(1000 + i % 50, f"m{i}")
        try:
            wait_for(lambda: len({t for _, t in tg.sent_texts()}) >= burst, timeout, interval=0.005)
        except AssertionError:
            done = len({t for _, t in tg.sent_texts()})
            raise Unavailable(f"{done} of {burst} answered in {timeout:g} s ({done / timeout:.2f} msg/s); "
                              "a smaller --real-burst finishes") from None
        rate = burst / (time.perf_counter() - t0)
        for name, seconds in real_cpu(gw).items():
            cpu.setdefault(name, []).append((seconds - cpu0.get(name, 0.0)) / burst * 1e6)
        return rate
    finally:
        gw.stop(60)
        for problem in gw.problems:
            print(f"[bench] {problem}", file=sys.stderr)
        tg.close()
        model.close()


@contextlib.contextmanager
def gateway_binary(bindir: Path | None) -> Any:
    """The gateways started meanwhile run the `openclaw-sup` of `bindir` (None: this tree's)."""
    before = conftest.BIN
    conftest.BIN = bindir / "openclaw-sup" if bindir else before
    try:
        yield
    finally:
        conftest.BIN = before


def compare_builds(root: Path, refs: list[str], reps: int, burst: int, cache: Path,
                   real: tuple[Path, int] | None = None, max_concurrent: int | None = None) -> None:
    """The Telegram burst of this tree beside each ref's build (and with `real`, the real gateway's binary and its
    burst), one after the other in every rep; a summary table at the end."""
    builds: list[tuple[str, Path | None]] = [("this tree", None)]
    for ref in refs:
        sha = subprocess.run(["git", "rev-parse", "--short", ref], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent).stdout.strip()
        builds.append((f"{ref} ({sha})" if sha != ref else ref, ensure_install(cache, ref)))
    labels = [label for label, _ in builds] + ([REAL_LABEL] if real else [])
    rates: dict[str, list[float]] = {label: [] for label in labels}
    cpu: dict[str, dict[str, list[float]]] = {label: {} for label in labels}
    failed: dict[str, str] = {}
    for rep in range(reps):
        for n, (label, bindir) in enumerate(builds):
            with gateway_binary(bindir):
                rates[label].append(telegram_burst(root / f"build{n}-{rep}", burst, kill=False, cpu=cpu[label],
                                                   max_concurrent=max_concurrent)[0])
        if real and REAL_LABEL not in failed:
            try:
                rates[REAL_LABEL].append(real_burst(root / f"real-{rep}", real[0], real[1], cpu[REAL_LABEL],
                                                    REAL_TIMEOUT_S))
            except (AssertionError, Unavailable) as exc:
                failed[REAL_LABEL] = str(exc).splitlines()[0][:300]
    for label in labels:
        n = real[1] if real and label == REAL_LABEL else burst
        print(f"-- {label}" + (f" (burst of {n}, not {burst})" if n != burst else ""))
        if label in failed:
            print(f"   could not finish a burst: {failed[label]}")
        if rates[label]:
            stats(f"Telegram burst of {n}", rates[label], "msg/s")
        for name, values in sorted(cpu[label].items(), key=lambda kv: -statistics.median(kv[1])):
            if name.startswith(("agent", "channel:", "gateway", "real:")):
                stats(f"CPU/msg {name}"[:34], values, "us")
    summary(labels, rates, cpu)


REAL_LABEL = "real OpenClaw 2026.9.6"
REAL_TIMEOUT_S = 600.0


def summary(labels: list[str], rates: dict[str, list[float]], cpu: dict[str, dict[str, list[float]]]) -> None:
    """One row per gateway: rate (median, min-max over reps) and the whole tree's CPU per message."""
    print(f"\n{'gateway':<34} {'msg/s median':>12} {'(min-max)':>17} {'tree CPU/msg median':>20}")
    for label in labels:
        if not rates[label]:
            print(f"{label:<34} {'no burst finished':>12}")
            continue
        per_rep = [sum(values[i] for values in cpu[label].values() if i < len(values))
                   for i in range(len(rates[label]))]
        print(f"{label:<34} {statistics.median(rates[label]):12.1f} "
              f"{f'({min(rates[label]):.1f}-{max(rates[label]):.1f})':>17} {statistics.median(per_rep):17.0f} us")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dms", type=int, default=100)
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fleet", type=int, default=50, help="accounts on one gateway for the memory figure (0: skip)")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--only-new", action="store_true", help="skip the IRC round trips and the Telegram kill runs")
    ap.add_argument("--kinds", default="telegram,discord,slack,matrix", help="kinds for the inbound rates")
    ap.add_argument("--refs", default="", help="git refs whose builds run the Telegram burst beside this tree's "
                                               "(e.g. a commit before a change, main); with it, only that is run")
    ap.add_argument("--cache", type=Path, default=CACHE, help="where the refs' installs live")
    ap.add_argument("--real", action="store_true", help="the real OpenClaw gateway runs the Telegram burst beside "
                                                        "this tree's (and the refs'); with it, only that is run")
    ap.add_argument("--real-burst", type=int, default=0, help="the real gateway's burst (default: --burst)")
    ap.add_argument("--max-concurrent", type=int, default=0, help="agents.defaults.maxConcurrent of the Telegram "
                                                                  "bursts (default: unset, upstream's default)")
    args = ap.parse_args()
    if args.refs or args.real:
        real = None
        if args.real:
            try:
                real = (install_real(), args.real_burst or args.burst)
            except Unavailable as exc:
                print(f"-- {REAL_LABEL}: skipped, the real openclaw CLI is not installed and could not be: {exc}")
        with tempfile.TemporaryDirectory(prefix="bench-channels-") as tmp:
            compare_builds(Path(tmp), [r for r in args.refs.split(",") if r], args.reps, args.burst, args.cache,
                           real, args.max_concurrent or None)
        return
    with tempfile.TemporaryDirectory(prefix="bench-channels-") as tmp:
        root = Path(tmp)
        peers = Peers(root)
        try:
            if args.fleet:
                fleet(root / "fleet", peers, args.fleet, args.settle)
            rates: dict[str, list[float]] = {k: [] for k in args.kinds.split(",") if k}
            for rep in range(args.reps):
                for kind in rates:
                    rates[kind].append(inbound_rate(root / f"{kind}{rep}", peers, kind, args.burst))
            for kind, values in rates.items():
                stats(f"{kind.capitalize()} inbound, burst of {args.burst}", values, "msg/s")
        finally:
            peers.close()
        if args.only_new:
            return
        stats("IRC DM round trip", irc_round_trips(root / "irc", args.dms), "ms")
        rates, gaps, cpu = [], [], {}
        for rep in range(args.reps):
            rates.append(telegram_burst(root / f"tg{rep}", args.burst, kill=False, cpu=cpu,
                                        max_concurrent=args.max_concurrent or None)[0])
            gap = telegram_burst(root / f"tgk{rep}", args.burst, kill=True)[1]
            gaps.append(gap or 0.0)
        stats(f"Telegram burst of {args.burst}", rates, "msg/s")
        for name, values in sorted(cpu.items(), key=lambda kv: -statistics.median(kv[1])):
            stats(f"CPU/msg {name}"[:34], values, "us")
        stats("Telegram SIGKILL -> next reply", gaps, "ms")


if __name__ == "__main__":
    main()
