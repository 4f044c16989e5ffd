"""A kind module that the fork server imports at its boot and that takes a second to load: the supervisor binds the
port and sends its first spawns before the fork server is up (tests/test_supervisor.py)."""

from __future__ import annotations

import time

time.sleep(1.0)
