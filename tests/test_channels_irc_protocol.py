"""IRC client details ngircd cannot show: SASL PLAIN over IRCv3 CAP (ngircd has no SASL), against a scripted
server speaking the documented exchange (IRCv3 sasl-3.1), plus nick-in-use, PING/PONG and line framing."""

from __future__ import annotations

import asyncio
import base64
import logging

from openclaw_sup.workers.channels.irc import IrcAdapter, parse_line, split_text
from openclaw_sup.workers.channels.policy import Inbound


def test_parse_line_and_split_text() -> None:
    assert parse_line("@msgid=abc;time=x :nick!u@h PRIVMSG #room :hello there") == (
        {"msgid": "abc", "time": "x"}, "nick!u@h", "PRIVMSG", ["#room", "hello there"])
    assert parse_line("PING :irc.example") == ({}, "", "PING", ["irc.example"])
    lines = split_text("é" * 300 + "\nsecond line", limit=100)
    assert all(len(ln.encode()) <= 100 for ln in lines) and "".join(lines[:-1]) == "é" * 300
    assert lines[-1] == "second line"


def test_sasl_plain_nick_in_use_ping_and_a_direct_message() -> None:
    async def scenario() -> tuple[list[str], list[Inbound], IrcAdapter]:
        seen: list[str] = []
        got: list[Inbound] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            def send(line: str) -> None:
                writer.write(line.encode() + b"\r\n")

            nick = ""
            while raw := await reader.readline():
                line = raw.decode().rstrip("\r\n")
                seen.append(line)
                if line == "CAP LS 302":
                    send(":srv CAP * LS :multi-prefix sasl=PLAIN,EXTERNAL")
                elif line == "CAP REQ :sasl":
                    send(":srv CAP * ACK :sasl")
                elif line == "AUTHENTICATE PLAIN":
                    send("AUTHENTICATE +")
                elif line.startswith("AUTHENTICATE "):
                    ok = base64.b64decode(line.split()[1]) == b"botacct\0botacct\0s3cret"
                    send(":srv 903 * :SASL authentication successful" if ok else ":srv 904 * :SASL failed")
                elif line == "NICK clawbot":
                    send(":srv 433 * clawbot :Nickname is already in use")
                elif line.startswith("NICK "):
                    nick = line.split()[1]
                elif line.startswith("USER ") or (line == "CAP END" and nick):
                    if nick and any(s.startswith("USER ") for s in seen) and "CAP END" in seen:
                        send(f":srv 001 {nick} :Welcome")
                        send("PING :lag-check")
                elif line == "PONG :lag-check":
                    send(f":dave!d@host PRIVMSG {nick} :hi bot")

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def sink(msgs: list[Inbound], meta: dict | None) -> None:
            got.extend(msgs)

        cfg = {"host": "127.0.0.1", "port": port, "nick": "clawbot", "sasl": {"username": "botacct",
                                                                                "password": "s3cret"}}
        adapter = IrcAdapter(cfg, logging.getLogger("test.irc"), sink, lambda _k: None)
        task = asyncio.create_task(adapter.run())
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.02)
        await adapter.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()
        return seen, got, adapter

    seen, got, adapter = asyncio.run(scenario())
    assert seen[:4] == ["CAP LS 302", "NICK clawbot", "USER clawbot 0 * :OpenClaw", "CAP REQ :sasl"]
    assert "AUTHENTICATE PLAIN" in seen and "CAP END" in seen and "NICK clawbot_" in seen
    assert "PONG :lag-check" in seen
    assert adapter.nick == "clawbot_"
    assert [(m.sender_id, m.chat_type, m.text) for m in got] == [("dave", "direct", "hi bot")]
    assert "s3cret" not in adapter.redact("password s3cret")
