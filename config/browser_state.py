"""The files a managed browser profile keeps beside its user-data dir (`<stateDir>/browser/<profile>/`) while its
Chromium runs. The supervisor reads them at boot without importing the browser's config or worker code."""

from __future__ import annotations

import os
from pathlib import Path

RECORD_FILE = "chromium.json"
"""The process group of the Chromium the profile launched, until that one is stopped."""
WANTED_FILE = "wanted"
"""The profile was started and not stopped: it comes back with its worker."""


def left_running(state_dir: Path) -> list[str]:
    """Profiles whose Chromium was up when the browser worker last died (its record or wanted marker is still
    there): that worker must start at boot to sweep or restore them, not at its first use."""
    root = state_dir / "browser"
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(n for n in names if any(os.path.lexists(root / n / f) for f in (RECORD_FILE, WANTED_FILE)))
