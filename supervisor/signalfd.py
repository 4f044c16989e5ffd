"""The supervisor's signals, read from a signalfd rather than run as handlers.

An event loop's signal handlers are a C handler that marks the signal and writes its number to a wakeup socket,
then a Python handler the loop runs later. uvloop merges the two sources without a lock: with signals arriving
together at several threads (the loop's, ZeroMQ's, the import thread's), a signal was handled twice, or not at
all (one in three runs of fifteen-signal bursts lost one). Blocked in every thread from the start and read from
a signalfd, each signal is one record, in order, with its sender; a signal sent while the supervisor boots
waits, pending, until the loop reads it. Nothing runs on the alternate signal stack either.

The mask is inherited across fork and exec: what the supervisor starts once it is blocked (a fork server in a
fresh interpreter) is spawned with the default mask (`ForkServer.exec`).
"""

from __future__ import annotations

import functools
import os
import signal
import struct
import sys
from collections.abc import Iterable
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
RELOAD_SIGNALS = (signal.SIGHUP,)
RESTART_SIGNALS = (signal.SIGUSR2, signal.SIGUSR1)
IGNORED_SIGNALS = tuple(dict.fromkeys((
    signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR, signal.SIGXCPU, signal.SIGTRAP,
    signal.SIGSYS, getattr(signal, "SIGSTKFLT", signal.SIGTRAP), *range(signal.SIGRTMIN, signal.SIGRTMAX + 1))))
"""Signals whose default action would end the process without a word: logged and ignored instead."""
HANDLED = (*STOP_SIGNALS, *RELOAD_SIGNALS, *RESTART_SIGNALS, *IGNORED_SIGNALS)

_SIGINFO = struct.Struct("=IiiII")  # ssi_signo, ssi_errno, ssi_code, ssi_pid, ssi_uid: the head of signalfd_siginfo
_SIGINFO_SIZE = 128
_READ_AT_ONCE = 64


@functools.cache
def _libc() -> tuple[Any, Any]:
    """libc's signalfd and a glibc sigset_t, made on first use: `block()` runs on the start's critical path."""
    import ctypes

    class KernelSigset(ctypes.Structure):
        _fields_ = [("bits", ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong))))]

    return ctypes.CDLL(None, use_errno=True).signalfd, KernelSigset


def block(signals: Iterable[int] = HANDLED) -> None:
    """Block `signals` in the calling thread and every thread it starts afterwards; call before the first thread
    (ZeroMQ's included) exists. Not where signalfd is missing: the loop's handlers are used there."""
    if sys.platform.startswith("linux"):
        signal.pthread_sigmask(signal.SIG_BLOCK, set(signals))


class SignalReader:
    """A non-blocking signalfd for `signals`; `read()` returns what arrived as (signal, sender pid) pairs."""

    def __init__(self, signals: Iterable[int]) -> None:
        import ctypes

        signalfd, sigset = _libc()
        mask = sigset()
        width = 8 * ctypes.sizeof(ctypes.c_ulong)
        for sig in signals:
            mask.bits[(sig - 1) // width] |= 1 << ((sig - 1) % width)
        fd = signalfd(-1, ctypes.byref(mask), os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd: int = fd

    @classmethod
    def for_blocked(cls, signals: Iterable[int] = HANDLED) -> SignalReader | None:
        """A reader when every one of `signals` is blocked in this thread (`block()` ran first), else None."""
        wanted = set(signals)
        if not sys.platform.startswith("linux") or not wanted <= signal.pthread_sigmask(signal.SIG_BLOCK, set()):
            return None
        try:
            return cls(wanted)
        except (OSError, AttributeError):
            return None

    def read(self) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        while True:
            try:
                data = os.read(self.fd, _SIGINFO_SIZE * _READ_AT_ONCE)
            except (BlockingIOError, InterruptedError):
                return got
            for at in range(0, len(data) - _SIGINFO_SIZE + 1, _SIGINFO_SIZE):
                signo, _errno, _code, pid, _uid = _SIGINFO.unpack_from(data, at)
                got.append((signo, pid))
            if len(data) < _SIGINFO_SIZE * _READ_AT_ONCE:
                return got


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIGRTMIN+{sig - signal.SIGRTMIN}"


def sender(pid: int) -> str:
    """' (sent by pid N, name)' for a log line; '' for the kernel or this process itself."""
    if pid <= 0 or pid == os.getpid():
        return ""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f" (sent by pid {pid}, {f.read().strip()})"
    except OSError:
        return f" (sent by pid {pid})"
