"""Read JSON5 files with `${VAR}` substitution, naming the file and the reason on failure."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pyjson5

_VAR = re.compile(r"\$(\$?)\{([A-Z_][A-Z0-9_]*)\}")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, the path and the reason."""


def substitute_env(value: Any, env: dict[str, str] | None = None, missing: list[str] | None = None) -> Any:
    """Replace `${VAR}` in every string; `$${VAR}` escapes; an unset variable stays literal (and is noted)."""
    env = os.environ if env is None else env
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            if m.group(1):
                return "${" + m.group(2) + "}"
            if m.group(2) in env:
                return env[m.group(2)]
            if missing is not None:
                missing.append(m.group(2))
            return m.group(0)
        return _VAR.sub(repl, value) if "$" in value else value
    if isinstance(value, dict):
        return {k: substitute_env(v, env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, env, missing) for v in value]
    return value


def parse_json5(text: str, source: str) -> Any:
    """Parse JSON5 text; a syntax error names the source."""
    try:
        return pyjson5.decode(text)
    except pyjson5.Json5Exception as exc:
        raise ConfigError(f"Invalid config at {source}: not valid JSON5: {exc}") from None


def load_json5(path: Path, env: dict[str, str] | None = None, substitute: bool = True) -> dict[str, Any]:
    """Load a JSON5 object file; a missing file is an empty config.

    `substitute=False` keeps `${VAR}` literal: owned writes must not bake the environment into the file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"Invalid config at {path}: cannot read: {exc.strerror}") from None
    data = parse_json5(text, str(path)) if text.strip() else {}
    if not isinstance(data, dict):
        raise ConfigError(f"Invalid config at {path}: the top level must be an object, not {type(data).__name__}")
    return substitute_env(data, env) if substitute else data
