"""argparse's help formatter, minus its `import shutil`.

argparse imports shutil (and through it the bz2 and lzma codecs) for the terminal width whenever a parser is built,
which every `openclaw-sup gateway` start and every `status` does before anything else; the width is read here the
way shutil reads it.
"""

from __future__ import annotations

import argparse
import os
import sys


def terminal_columns() -> int:
    """What `shutil.get_terminal_size().columns` gives: $COLUMNS, else the terminal's width, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class HelpFormatter(argparse.HelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, terminal_columns() - 2 if width is None else width)
