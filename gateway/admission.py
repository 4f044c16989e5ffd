"""Who may hold a socket on the gateway port, so hostile peers can never take the supervisor's descriptors.

Checked once per accepted socket, in this order:
- at most `per_address` unauthenticated sockets per peer address (before their request head is complete,
  or a WebSocket before `connect` succeeds), as upstream's pre-auth budget (32,
  `OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP`); over it the new socket is refused;
- at most `capacity` sockets in all, counting the HTTP connections aiohttp holds; the supervisor sets the
  capacity each second from its descriptor limit less what it needs for its own work. When full, the
  oldest unauthenticated socket is closed to make room; with none to close, the new socket is refused.

An authenticated WebSocket is never evicted: an attacker can only push out other unauthenticated sockets.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

PER_ADDRESS_ENV = "OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP"
DEFAULT_PER_ADDRESS = 32
DEFAULT_CAPACITY = 4096
MIN_CAPACITY = 16


class Member(Protocol):
    def evict(self) -> None:
        """Close now, to make room (the socket's `connection_lost` still calls `release`)."""


def per_address_from_env(env: dict[str, str] | None = None) -> int:
    raw = (os.environ if env is None else env).get(PER_ADDRESS_ENV, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_PER_ADDRESS


class Admission:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, per_address: int = DEFAULT_PER_ADDRESS,
                 others: Callable[[], int] = lambda: 0) -> None:
        self.capacity = max(MIN_CAPACITY, capacity)
        self.per_address = per_address
        self.others = others
        self._open: set[Member] = set()
        self._preauth: dict[Member, str] = {}  # insertion order is age: the first is the oldest
        self._by_address: dict[str, int] = {}
        self.refused_address = 0
        self.refused_full = 0
        self.evicted = 0

    def admit(self, sock: Member, address: str) -> str | None:
        """Count a new socket as unauthenticated; the reason to refuse it, or None."""
        if self._by_address.get(address, 0) >= self.per_address:
            self.refused_address += 1
            return "too many unauthenticated connections from this address"
        if self.in_use() >= self.capacity and not self._evict_oldest():
            self.refused_full += 1
            return "the gateway is at its connection limit"
        self._open.add(sock)
        self._preauth[sock] = address
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return None

    def authenticated(self, sock: Member) -> None:
        """The socket proved itself (WebSocket `connect`) or left for aiohttp: no longer evictable."""
        address = self._preauth.pop(sock, None)
        if address is not None:
            n = self._by_address[address] - 1
            if n:
                self._by_address[address] = n
            else:
                del self._by_address[address]

    def release(self, sock: Member) -> None:
        """The socket is gone (or now counted by aiohttp); idempotent."""
        self.authenticated(sock)
        self._open.discard(sock)

    def _evict_oldest(self) -> bool:
        if not self._preauth:
            return False
        oldest = next(iter(self._preauth))
        self.release(oldest)
        self.evicted += 1
        oldest.evict()
        return True

    def in_use(self) -> int:
        return len(self._open) + self.others()

    def set_capacity(self, capacity: int) -> None:
        self.capacity = max(MIN_CAPACITY, capacity)

    def snapshot(self) -> dict[str, int]:
        return {"open": self.in_use(), "unauthenticated": len(self._preauth), "capacity": self.capacity,
                "perAddress": self.per_address, "refusedPerAddress": self.refused_address,
                "refusedFull": self.refused_full, "evicted": self.evicted}
