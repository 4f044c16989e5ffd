"""Read JSON5 files with `${VAR}` substitution, naming the file and the reason on failure.

Most config files are plain JSON (what the CLI writes): those are read by the standard library, and the JSON5
parser (with the modules it pulls in, about 2 MB in every process that reads a config) is imported only for a
file that is JSON5 proper or not valid at all, which it then reads or explains."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

_VAR = re.compile(r"\$(\$?)\{([A-Z_][A-Z0-9_]*)\}")
_NEAR = re.compile(r"\bnear (\d+)")
_TOKEN = re.compile(r"b'(\w+)'|U\+([0-9A-Fa-f]{4,6})")
_NAMES = {"JSON5Value": "a value", "comma": "','", "NumericLiteral": "number", "IdentifierName": "a key"}
_CLOSERS = {"object": "}", "array": "]", "string": "closing quote", "comment": "*/"}


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


def _token(m: re.Match[str]) -> str:
    if m.group(1):
        return _NAMES.get(m.group(1), m.group(1))
    char = chr(int(m.group(2), 16))
    return repr(char) if char.isprintable() else f"U+{m.group(2).upper()}"


def json5_error(exc: Exception, text: str) -> tuple[int, int, str]:
    """pyjson5's error -> (line, column, words a person reads), e.g. (1, 12, "unclosed object (add the
    missing })"). The library reports a 1-based character offset ("near N"); lines and columns are 1-based."""
    message = str(exc.args[0]) if exc.args else str(exc)
    near = _NEAR.search(message)
    offset = max(int(near.group(1)) - 1, 0) if near else len(text)
    if message.startswith("Extra data") and near:  # here "near" is where the document ended, 0-based
        rest = text[int(near.group(1)):]
        offset = int(near.group(1)) + len(rest) - len(rest.lstrip())
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    unclosed = re.match(r"Unclosed b'(\w+)'", message)
    if unclosed:
        what = unclosed.group(1)
        closer = _CLOSERS.get(what)
        return line, column, f"unclosed {_NAMES.get(what, what)}" + (f" (add the missing {closer})" if closer else "")
    if message.startswith("Stray"):
        return line, column, "unexpected " + _TOKEN.sub(_token, message.split(" near")[0].removeprefix("Stray "))
    if message.startswith("Extra data"):
        found = _TOKEN.search(message)
        return line, column, f"unexpected {_token(found) if found else 'text'} after the end of the document"
    expected = re.match(r"Expected (.+?) near \d+(?:, found (.+))?$", message)
    if expected:
        want = _TOKEN.sub(_token, expected.group(1))
        found = _TOKEN.sub(_token, expected.group(2)) if expected.group(2) else "the end of the file"
        hint = " (a missing comma?)" if "','" in want and found not in ("the end of the file",) else ""
        return line, column, f"expected {want}, found {found}{hint}"
    return line, column, _TOKEN.sub(_token, message.split(" near")[0]).lower()


def parse_json5(text: str, source: str) -> Any:
    """Parse JSON5 text; a syntax error names the source, the line and column, and what is wrong there.

    JSON is JSON5: a document the standard parser accepts means the same in both."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    import pyjson5

    try:
        return pyjson5.decode(text)
    except pyjson5.Json5Exception as exc:
        line, column, words = json5_error(exc, text)
        raise ConfigError(f"Invalid config at {source}:{line}:{column}: not valid JSON5: {words}") from None


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
