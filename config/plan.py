"""Turn two sets of worker specs into a reload plan: which workers to start, stop and respawn.

A worker is respawned only when the digest of its own effective config changed; the rest keep their pid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from openclaw_sup.config.settings import WorkerSpec


@dataclass(frozen=True)
class ReloadPlan:
    start: tuple[WorkerSpec, ...] = ()
    stop: tuple[str, ...] = ()
    respawn: tuple[WorkerSpec, ...] = ()
    keep: tuple[str, ...] = ()

    @classmethod
    def between(cls, old: Iterable[WorkerSpec], new: Iterable[WorkerSpec]) -> ReloadPlan:
        before = {s.name: s for s in old}
        after = {s.name: s for s in new}
        return cls(
            start=tuple(s for n, s in after.items() if n not in before),
            stop=tuple(n for n in before if n not in after),
            respawn=tuple(s for n, s in after.items() if n in before and before[n].digest() != s.digest()),
            keep=tuple(n for n, s in after.items() if n in before and before[n].digest() == s.digest()),
        )

    @property
    def empty(self) -> bool:
        return not (self.start or self.stop or self.respawn)

    def summary(self) -> str:
        parts = [f"{label} {', '.join(names)}" for label, names in (
            ("start", [s.name for s in self.start]), ("stop", list(self.stop)),
            ("respawn", [s.name for s in self.respawn]), ("keep", list(self.keep))) if names]
        return "; ".join(parts) or "no worker changes"
