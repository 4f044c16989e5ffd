"""The event loop every process of the tree runs: uvloop's, less the pages of its read buffer that nothing wrote.

A uvloop loop embeds a 256 kB buffer that its streams read into, zeroed page by page when the loop is made: 252 kB
private to each process (the supervisor and every worker), though a worker whose only traffic is the bus (ZeroMQ,
read by the bus itself) never reads a stream into it. Given back at once, a page of it takes memory again only
when a read fills it."""

from __future__ import annotations

import asyncio

import uvloop

from openclaw_sup.config import heaptrim


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop whose untouched buffer pages are given back; made before any other thread can use it."""
    loop = uvloop.new_event_loop()
    heaptrim.drop_zero_pages(loop)
    return loop
