"""Reading an operator's env file with python-dotenv's stream parser.

The file may contain comments, single- and double-quoted values, an `export ` prefix and
quoted values that span lines, read as python-dotenv reads them. Escapes such as `\\n`
are decoded inside double quotes. Nothing is interpolated, so `${OTHER}` stays as written,
as flyctl would set it. A line the parser cannot read is reported by its number only,
because it may be a value pasted without a name, and so is a name that Fly would reject.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dotenv.parser import parse_stream

from bot.errors import CommandError
from bot.policy import SECRET_NAME_PATTERN
from bot.value_checks import value_problem

logger = logging.getLogger(__name__)

# An env file of secrets is small; a larger file is most likely the wrong file.
MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LineProblem:
    """A line of the file that gives no secret or a rejected value; `reason` never quotes the value."""

    line: int
    reason: str


@dataclass
class EnvFile:
    """The secrets of one env file, in file order, with the line each one starts on."""

    path: Path
    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    problems: list[LineProblem] = field(default_factory=list)
    # Names set more than once, with every line that sets them; the last line wins.
    repeated: dict[str, list[int]] = field(default_factory=dict)


def read_env_file(path: Path) -> EnvFile:
    """Parse `path`; raise CommandError when the file cannot be read as UTF-8 text."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
    if size > MAX_FILE_BYTES:
        raise CommandError(f"{path} is {size} bytes, more than the {MAX_FILE_BYTES} an env file of secrets needs; "
                           "check that it is the right file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path} is not UTF-8 text (invalid byte at position {exc.start}); "
                           "save it as UTF-8") from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_env_text(text, path=path)


def parse_env_text(text: str, *, path: Path) -> EnvFile:
    """Parse env file text into names, values and numbered problems."""
    env = EnvFile(path=path)
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            env.problems.append(LineProblem(line, "python-dotenv cannot parse it (check its quotes and the `=`)"))
            continue
        if binding.key is None:
            # A comment or a blank line.
            continue
        if binding.value is None:
            # The name is not shown: a value pasted alone on a line is read as a name without `=`.
            env.problems.append(LineProblem(line, "it has no `=` and so no value"))
            continue
        if not SECRET_NAME_PATTERN.match(binding.key):
            env.problems.append(LineProblem(
                line, "its name is not a valid Fly secret name (letters, digits and underscores, "
                      "not starting with a digit)"))
            continue
        if binding.key in env.values:
            env.repeated.setdefault(binding.key, [env.lines[binding.key]]).append(line)
        env.values[binding.key] = binding.value
        env.lines[binding.key] = line

    logger.info("env file read path=%s secrets=%d problems=%d", path, len(env.values), len(env.problems))
    return env


def check_values(env: EnvFile, *, allows_whitespace: Callable[[str], bool]) -> None:
    """Add a problem, naming the secret and its line, for each value that the value form would also reject.

    `allows_whitespace(name)` is the secret's allow_whitespace setting. Only the value that
    the import would set is checked: for a name set twice, the last line's.
    """
    for name, value in env.values.items():
        problem = value_problem(value, allow_whitespace=allows_whitespace(name), subject=f"the value of {name}")
        if problem is not None:
            env.problems.append(LineProblem(env.lines[name], problem))
    env.problems.sort(key=lambda problem: problem.line)
