"""The peers' worker (circus, supervisord): stamp the time first, report it over TCP, then sleep forever.

Usage: python -u worker.py NAME PORT. Sends `NAME PID T0 PPID` to the bench listener on 127.0.0.1:PORT.
T0 is CLOCK_MONOTONIC, which is system-wide, so the bench compares it with its own kill timestamps.
"""

import time

T0 = time.monotonic()  # the first thing the worker does: everything before this is manager + interpreter

import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    """Report once, keep the process alive until killed."""
    name, port = sys.argv[1], int(sys.argv[2])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"{name} {os.getpid()} {T0} {os.getppid()}\n".encode())
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
