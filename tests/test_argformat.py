"""The argparse formatter our early parsers use: shutil's terminal width, without importing shutil."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from openclaw_sup.argformat import HelpFormatter, terminal_columns


@pytest.mark.parametrize("columns", ["", "57", "0", "wide"])
def test_width_is_the_one_shutil_gives(monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == shutil.get_terminal_size().columns
    assert HelpFormatter("prog")._width == shutil.get_terminal_size().columns - 2


@pytest.mark.parametrize("parse", [
    "from openclaw_sup.supervisor.main import parse_args; parse_args(['--port', '18789'])",
    "from openclaw_sup.supervisor.node_main import parse_args; parse_args(['run'])",
    "from openclaw_sup.cli.status import main; main(['--help'])",
])
def test_parsers_before_the_work_do_not_import_shutil(parse: str) -> None:
    code = (f"import sys\ntry:\n    {parse}\nexcept SystemExit:\n    pass\n"
            "print(sorted({'shutil', 'bz2', 'lzma'} & set(sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env={"COLUMNS": "70"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"
    if "--help" in parse:
        assert max(len(line) for line in res.stdout.splitlines()[:-1]) <= 68
