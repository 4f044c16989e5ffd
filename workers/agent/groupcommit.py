"""Group commit: the transcript writes that runs finish in one pass of the event loop, in one transaction.

Each write into upstream's agent database dirties dozens of index pages and pays a commit; a burst of channel turns
(many sessions answered at once) shares both when its writes commit together. A run awaits its own write and goes
on (answers its caller) only once the transaction holding it committed, so nothing is acknowledged before it is
on disk. A write whose run was cancelled while it waited is not made (the run's end writes what it must).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

GroupWriter = Callable[[list[Callable[[], Any]]], list[tuple[Any, Exception | None]]]


class GroupCommit:
    """Queues writes for `writer` (AgentStore.group) and runs them together at the loop's next turn."""

    def __init__(self, writer: GroupWriter, rounds: int = 3) -> None:
        self.writer, self.rounds = writer, rounds
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._seen = self._waited = 0
        self.commits = 0
        self.writes = 0

    async def write(self, write: Callable[[], Any]) -> Any:
        """`write()`'s result once it is committed; its error if it failed (the others are kept)."""
        return await self.queue(write)

    def queue(self, write: Callable[[], Any]) -> asyncio.Future[Any]:
        """`write`, as with `write`, from a caller that is not a coroutine: the future of its result."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._pending.append((write, done))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return done

    def drain(self) -> None:
        """Write what is queued now (before the store closes)."""
        self._waited = self.rounds
        self._flush()

    def _flush(self) -> None:
        """Wait a loop pass more (up to `rounds`) while writes keep coming: runs a step behind join this group."""
        if len(self._pending) > self._seen and self._waited < self.rounds:
            self._seen, self._waited = len(self._pending), self._waited + 1
            asyncio.get_running_loop().call_soon(self._flush)
            return
        self._seen = self._waited = 0
        pending, self._pending = [(w, f) for w, f in self._pending if not f.cancelled()], []
        if not pending:
            return
        try:
            results = self.writer([write for write, _done in pending])
        except Exception as exc:  # the commit failed: every waiter gets why
            for _write, done in pending:
                if not done.done():
                    done.set_exception(exc)
            return
        self.commits += 1
        self.writes += len(pending)
        for (_write, done), (value, error) in zip(pending, results, strict=True):
            if done.done():
                continue
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(value)
