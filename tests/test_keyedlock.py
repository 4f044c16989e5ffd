"""workers/keyedlock.py: one holder per key at a time, in arrival order, keys independent, and nothing kept
for a key nobody holds or waits for (a cancelled waiter included)."""

from __future__ import annotations

import asyncio

from openclaw_sup.workers.keyedlock import KeyedLocks


def test_one_holder_per_key_in_order_and_nothing_kept_after() -> None:
    async def scenario() -> None:
        locks = KeyedLocks()
        log: list[str] = []
        release = asyncio.Event()

        async def take(key: str, name: str, wait: bool = False) -> None:
            async with locks.hold(key):
                log.append(f"+{name}")
                if wait:
                    await release.wait()
                log.append(f"-{name}")

        first = asyncio.create_task(take("s1", "a", wait=True))
        await asyncio.sleep(0)
        queued = [asyncio.create_task(take("s1", n)) for n in ("b", "c")]
        cancelled = asyncio.create_task(take("s1", "x"))
        other = asyncio.create_task(take("s2", "z"))
        await asyncio.sleep(0.01)
        assert log == ["+a", "+z", "-z"]  # s2 went while s1 was held; b, c and x wait behind a
        assert len(locks) == 1
        cancelled.cancel()
        release.set()
        await asyncio.gather(first, *queued, other, return_exceptions=True)
        assert log == ["+a", "+z", "-z", "-a", "+b", "-b", "+c", "-c"]
        assert cancelled.cancelled() and len(locks) == 0

    asyncio.run(scenario())
