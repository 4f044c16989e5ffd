"""Fuzz the gateway port with malformed WebSocket and HTTP input; report what it answered and what leaked.

WebSocket: broken frames on fresh sockets (reserved bits, unmasked, bad lengths, fragmented control frames,
stray continuations, close codes across 0-65535, invalid UTF-8), broken handshakes (`connect` with mangled
params), and after a good `connect`, requests with every shape of wrong (not JSON, not an object, ids and
methods of every type, each served method with random params). HTTP: valid requests mutated (control
bytes, bare LF, bad lengths and chunking, long lines, odd methods and versions), with the gateway token,
the hook token and a stranger's token in the malformed header lines.

Afterwards: the supervisor must be the same process with every worker running; its stdout/stderr and log
file must hold no token and no traceback; the log must have no internal error. Seeded, bounded, loopback.

    .venv/bin/python bench/fuzz.py                      # 20 000 WebSocket + 3 000 HTTP inputs
    .venv/bin/python bench/fuzz.py --ws 500 --http 300  # quick
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import random
import socket
import struct
import time
from collections import Counter
from typing import Any

from bench_common import SERVING, add_output_args, log, print_problems, publish
from gw_client import connect_params
from sup_harness import HOOK_TOKEN, TOKEN, Supervisor

from openclaw_sup.gateway.params import PARAMS

STRANGER = "stranger-token-5555aaaa7777bbbb"
HTTP_WAIT_S = 3.0
"""A mutated request may still wait for its body (the server's bound is 30 s): this is as long as we wait."""
TOKENS = (TOKEN, HOOK_TOKEN, STRANGER)
VALUES: list[Any] = [None, True, False, 0, -1, 2**63, 1.5, float("1e308"), "", "x", "\u0000", "é" * 3, [], [1, "a"],
                     {}, {"a": {"b": None}}, "a" * 5000]


SHORT: list[Any] = [None, True, -1, 0, 1, 1.5, "x", "", [], {}]
"""Values for a `timeoutMs`: a valid one must not make the fuzz wait."""
SPARED = frozenset({"gateway.restart.request"})
"""Valid requests to these would restart the gateway's workers: fuzzed elsewhere (tests/test_params.py)."""


def masked(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True,
           length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Port:
    def __init__(self, port: int) -> None:
        self.port = port

    def sock(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return s

    def upgraded(self) -> socket.socket:
        """A socket past the 101 and the `connect.challenge` frame."""
        s = self.sock()
        key = base64.b64encode(os.urandom(16))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
        buf = b""
        while b"connect.challenge" not in buf or not buf.rstrip().endswith(b"}}"):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the upgrade")
            buf += chunk
        if not buf.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(buf.split(b"\r\n", 1)[0].decode(errors="replace"))
        return s


def close_code(s: socket.socket) -> str:
    """What the server did with the input: the close code it sent (read as soon as it arrives; the socket
    is then dropped rather than answering the close), `accepted` for a hello-ok, or how it ended."""
    buf = b""
    s.settimeout(15)
    try:
        while True:
            found = _close_in(buf)
            if found is not None:
                return found
            if b'"hello-ok"' in buf:
                return "accepted"
            chunk = s.recv(65536)
            if not chunk:
                return _close_in(buf) or "eof"
            buf += chunk
    except (TimeoutError, OSError) as exc:
        return f"no close ({type(exc).__name__})"


def _close_in(buf: bytes) -> str | None:
    i = 0
    while i + 2 <= len(buf):
        op, n = buf[i] & 0x0F, buf[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            if len(buf) < j + 2:
                return None
            n, j = struct.unpack_from("!H", buf, j)[0], j + 2
        elif n == 127:
            if len(buf) < j + 8:
                return None
            n, j = struct.unpack_from("!Q", buf, j)[0], j + 8
        if len(buf) < j + n:
            return None
        if op == 0x8:
            return f"close {struct.unpack_from('!H', buf, j)[0]}" if n >= 2 else "close (no code)"
        i = j + n
    return None


def frame_cases(rng: random.Random) -> list[bytes]:
    """Frames RFC 6455 forbids a client to send, each to go after the upgrade on a fresh socket."""
    cases = [
        masked(1, b"{}", rsv=rng.choice((0x10, 0x20, 0x40))),
        masked(1, b"{}", mask=False),
        masked(rng.choice((3, 4, 5, 6, 7, 11, 12, 13, 14, 15)), b"x"),
        masked(9, b"p" * 126, length=126),
        masked(8, b"\x03\xe8", fin=False),
        masked(0, b"continuation"),
        masked(1, b"a", fin=False) + masked(1, b"b"),
        masked(8, struct.pack("!H", rng.randrange(65536)) + os.urandom(rng.randrange(4))),
        masked(8, b"\x03"),
        masked(8, b"\x03\xe8\xff\xfe"),
        masked(1, bytes(rng.randrange(128, 256) for _ in range(rng.randrange(1, 40)))),
        masked(1, b"", length=2**40)[:14],
        masked(2, os.urandom(rng.randrange(1, 200))),
        os.urandom(rng.randrange(1, 64)),
    ]
    return [rng.choice(cases)]


def handshake_case(rng: random.Random) -> bytes:
    params: Any = connect_params(TOKEN)
    roll = rng.randrange(6)
    if roll == 0:
        params = rng.choice(VALUES)
    elif roll == 1:
        params[rng.choice(list(params))] = rng.choice(VALUES)
    elif roll == 2:
        params["client"] = {k: rng.choice(VALUES) for k in params["client"]}
    elif roll == 3:
        params["auth"] = {"token": rng.choice(TOKENS) + rng.choice(("", "\x00", "x"))}
    elif roll == 4:
        params = {**params, rng.choice(("extra", "__proto__", "constructor")): rng.choice(VALUES)}
    frame = {"type": rng.choice(("req", "req", "res", None)), "id": rng.choice(["c", *VALUES]),
             "method": rng.choice(("connect", "connect", "health", "")), "params": params}
    return json.dumps(frame, default=str).encode()


def request_case(rng: random.Random, methods: list[str]) -> bytes:
    roll = rng.randrange(8)
    if roll == 0:
        return rng.choice((b"not json", b"[1,2]", b"\"str\"", b"{" * 3000, b"{\"type\":\"req\"", b"null"))
    method = rng.choice(methods)
    if roll == 1:
        return json.dumps({"type": "req", "id": rng.choice(VALUES), "method": method}, default=str).encode()
    if roll == 2:
        return json.dumps({"type": "req", "id": "r", "method": rng.choice(VALUES)}, default=str).encode()
    spec = PARAMS.get(method, {})
    fields = list(spec) or ["x"]
    params: Any = {f: rng.choice(SHORT if "imeout" in f else VALUES)
                   for f in rng.sample(fields, rng.randrange(1, len(fields) + 1))}
    if roll == 3:
        params = rng.choice(VALUES)
    return json.dumps({"type": "req", "id": f"r{rng.randrange(10**6)}", "method": method, "params": params},
                      default=str).encode()


def connected(port: Port) -> socket.socket:
    s = port.upgraded()
    s.sendall(masked(1, json.dumps({"type": "req", "id": "c", "method": "connect",
                                    "params": connect_params(TOKEN) | {"scopes": ["operator.admin"]}}).encode()))
    read_until(s, b'"id":"c"')
    return s


def read_until(s: socket.socket, marker: bytes) -> bytes | None:
    """Bytes up to and including `marker`, or None if the server closed first (the close frame is then read)."""
    buf = b""
    s.settimeout(30)
    try:
        while marker not in buf:
            chunk = s.recv(1 << 20)
            if not chunk:
                return None
            buf += chunk
            if b"\x88" in buf and marker not in buf and buf.rfind(b"\x88") > buf.rfind(b"}"):
                return None
    except (TimeoutError, OSError):
        return None
    return buf


def same_run(before: dict[str, tuple[int | None, int]], now: dict[str, Any]) -> bool:
    """The worker still runs the process it ran before the fuzz; an on-demand worker the fuzz woke (idle, no pid,
    before) counts as long as it was not restarted since."""
    pid, restarts = before.get(now["name"], (None, -1))
    return now["pid"] == pid or (pid is None and now["restarts"] == restarts)


def ws_fuzz(port: Port, n: int, rng: random.Random, methods: list[str]) -> dict[str, Any]:
    """Frames and handshakes each on a fresh socket; requests on an authenticated socket, each followed by a
    `health` whose answer says the connection still serves (a new one is opened when the server closed it)."""
    outcomes: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    conn: socket.socket | None = None
    for i in range(n):
        kind = rng.choice(("frame", "handshake", "request", "request", "request", "request"))
        t = time.monotonic()
        try:
            if kind == "request":
                if conn is None:
                    conn = connected(port)
                conn.sendall(masked(1, request_case(rng, methods)))
                conn.sendall(masked(1, b'{"type":"req","id":"s%d","method":"health"}' % i))
                buf = read_until(conn, b'"id":"s%d"' % i)
                if buf is None:
                    outcomes["request: connection closed"] += 1
                    conn.close()
                    conn = None
                    seconds[kind] += time.monotonic() - t
                    continue
                for code in ("INVALID_REQUEST", "UNAVAILABLE", "FORBIDDEN"):
                    answered[code] += buf.count(f'"code":"{code}"'.encode())
                answered["ok"] += buf.count(b'"ok":true') - 1
                outcomes["request: answered, connection still serving"] += 1
                seconds[kind] += time.monotonic() - t
                continue
            with port.upgraded() as s:
                s.sendall(frame_cases(rng)[0] if kind == "frame" else masked(1, handshake_case(rng)))
                outcomes[f"{kind}: {close_code(s)}"] += 1
        except (ConnectionError, OSError) as exc:
            outcomes[f"{kind}: {type(exc).__name__}"] += 1
            conn = None
        seconds[kind] += time.monotonic() - t
    if conn is not None:
        conn.close()
    return {"inputs": n, "outcomes": dict(outcomes), "answers": dict(answered),
            "secondsByKind": {k: round(v, 1) for k, v in seconds.items()}}


HTTP_BASE = [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n",
    b"POST /hooks/wake HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n"
    b"{\"text\":\"x\"}",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /ready HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n",
]
AUTH_LINES = [b"Authorization: Bearer {t}", b"X-OpenClaw-Token: {t}", b"Cookie: s={t}", b"X-Api-Key: {t}",
              b"Proxy-Authorization: Basic {t}", b"Auth{c}orization: Bearer {t}"]


def http_case(rng: random.Random) -> bytes:
    token = rng.choice(TOKENS).encode()
    ctl = bytes([rng.choice((0, 1, 2, 8, 11, 12, 27, 127, 255))])
    auth = rng.choice(AUTH_LINES).replace(b"{t}", token + (ctl if rng.random() < 0.7 else b"")).replace(b"{c}", ctl)
    req = bytearray(rng.choice(HTTP_BASE).replace(b"{auth}", auth))
    for _ in range(rng.randrange(0, 3)):
        roll = rng.randrange(9)
        if roll == 0:
            req[rng.randrange(len(req))] = rng.randrange(256)
        elif roll == 1:
            req = bytearray(req.replace(b"\r\n", b"\n", 1 + rng.randrange(3)))
        elif roll == 2:
            req = bytearray(req.replace(b"HTTP/1.1", rng.choice((b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9", b"HTTX/1.1"))))
        elif roll == 3:
            req = bytearray(req.replace(b"Host: x", b"Host: x\r\nContent-Length: " + rng.choice(
                (b"-1", b"99999999999999999999", b"1, 2", b"abc"))))
        elif roll == 4:
            req = bytearray(req.replace(b"Host: x", b"Host: x\r\nTransfer-Encoding: chunked"))
            req += b"zz\r\n"
        elif roll == 5:
            req = bytearray(req.replace(b"Host: x", b"Host: x\r\nX-Long: " + b"a" * rng.choice((9000, 20000))))
        elif roll == 6 and b" " in req:
            req = bytearray(rng.choice((b"BREW", b"G\x00T", b"get", b"PRI * HTTP/2.0")) + req[req.index(b" "):])
        elif roll == 7:
            req = bytearray(req.replace(b"Host: x", b"Host: x\r\n" + ctl + b"Bad: header"))
        else:
            req = req[: rng.randrange(1, len(req))]
    return bytes(req)


def http_fuzz(port: Port, n: int, rng: random.Random) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    for _ in range(n):
        try:
            with port.sock() as s:
                s.sendall(http_case(rng))
                s.settimeout(HTTP_WAIT_S)
                buf = b""
                with contextlib.suppress(TimeoutError):
                    while chunk := s.recv(65536):
                        buf += chunk
                        if b"\r\n\r\n" in buf:
                            break
        except OSError as exc:
            statuses[type(exc).__name__] += 1
            continue
        if buf.startswith(b"HTTP/"):
            statuses[buf.split(b" ", 2)[1].decode(errors="replace")] += 1
        else:
            statuses["closed" if buf == b"" else "other"] += 1
    return {"inputs": n, "statuses": dict(statuses)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ws", type=int, default=20_000, help="malformed WebSocket inputs")
    p.add_argument("--http", type=int, default=3_000, help="malformed HTTP requests")
    p.add_argument("--seed", type=int, default=None)
    add_output_args(p, "fuzz", "keep the gateway's temp dir (its log and stdout)", cache=False)
    args = p.parse_args()
    args.seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(args.seed)
    started = dt.datetime.now(dt.UTC)
    sup = Supervisor(keep=args.keep_tmp, settings={"limits": {"headTimeoutMs": 1000}})
    problems: list[str] = []
    try:
        sup.start()
        before = sup.sample()
        pid, workers = sup.pid, {w["name"]: (w["pid"], w["restarts"]) for w in sup.status()["workers"]}
        methods = sorted(set(PARAMS) - SPARED)
        port = Port(sup.port)
        t = time.monotonic()
        log(f"WebSocket fuzz: {args.ws} inputs (seed {args.seed})")
        ws = ws_fuzz(port, args.ws, rng, methods)
        ws["seconds"] = time.monotonic() - t
        t = time.monotonic()
        log(f"HTTP fuzz: {args.http} requests")
        http = http_fuzz(port, args.http, rng)
        http["seconds"] = time.monotonic() - t
        time.sleep(1.5)  # the sink's once-a-second report
        after = sup.sample()
        status = sup.status()
        if sup.pid != pid or status["supervisor"]["pid"] != pid:
            problems.append("the supervisor is not the same process")
        down = [w["name"] for w in status["workers"] if w["state"] not in SERVING or not same_run(workers, w)]
        if down:
            problems.append(f"workers restarted or down: {down}")
        lines = sup.log_lines()
    finally:
        code = sup.stop()
    out = sup.stdout.read_bytes() if sup.stdout.exists() else b""
    text = "\n".join(json.dumps(r) for r in lines)
    leaks = {t[:6] + "...": (t.encode() in out, t in text) for t in TOKENS}
    for tok, (in_out, in_log) in leaks.items():
        if in_out or in_log:
            problems.append(f"token {tok} found in " + " and ".join(w for w, f in (("stdout/stderr", in_out),
                                                                               ("the log", in_log)) if f))
    tracebacks = out.count(b"Traceback") + text.count("Traceback")
    internal = [r["message"] for r in lines if "internal error" in r["message"] or (
        r.get("level") == "error" and " failed: " in r["message"])]
    if tracebacks:
        problems.append(f"{tracebacks} tracebacks in stdout/stderr or the log")
    if internal:
        problems.append(f"{len(internal)} internal errors, e.g. {internal[0][:160]}")
    if code not in (0, None):
        problems.append(f"the supervisor exited {code} at SIGTERM")
    finished = dt.datetime.now(dt.UTC)
    by_subsystem = Counter(r.get("subsystem", "?") for r in lines)

    def render() -> dict[str, Any]:
        print(f"\nWebSocket: {ws['inputs']} inputs in {ws['seconds']:.1f}s")
        for k, v in sorted(ws["outcomes"].items(), key=lambda kv: -kv[1])[:20]:
            print(f"  {v:6d}  {k}")
        print(f"  answers to requests after connect: {ws['answers']}; seconds by kind {ws['secondsByKind']}")
        print(f"\nHTTP: {http['inputs']} requests in {http['seconds']:.1f}s; statuses "
              + ", ".join(f"{k} {v}" for k, v in sorted(http["statuses"].items(), key=lambda kv: -kv[1])))
        print(f"\nstdout+stderr: {len(out)} bytes; log: {len(lines)} records by subsystem {dict(by_subsystem)}")
        print(f"supervisor RSS {before['rss'] / 2**20:.1f} -> {after['rss'] / 2**20:.1f} MB, "
              f"fds {before['fds']} -> {after['fds']}, tree PSS {before['treePss'] / 2**20:.1f} -> "
              f"{after['treePss'] / 2**20:.1f} MB")
        print_problems(problems)
        return {"noProblems": not problems}

    publish("fuzz", args, started, finished, f"{args.ws} WebSocket + {args.http} HTTP inputs, seed {args.seed}",
            render, {"ws": ws, "http": http, "problems": problems, "stdoutBytes": len(out),
                     "logBySubsystem": dict(by_subsystem), "before": before, "after": after})


if __name__ == "__main__":
    main()
