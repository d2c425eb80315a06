"""Command-line parsing with the rules of spf13/pflag and cobra, which flyctl uses.

Flags may come before, between or after positional arguments, `--` ends flag parsing,
a lone `-` is a positional argument, and error texts match pflag's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UsageError

# strconv.ParseBool accepts exactly these spellings.
_TRUE_WORDS = ("1", "t", "T", "TRUE", "true", "True")
_FALSE_WORDS = ("0", "f", "F", "FALSE", "false", "False")


@dataclass(frozen=True)
class Flag:
    """One flag: its long name, optional one-letter shorthand, and whether it is boolean."""

    name: str
    shorthand: str = ""
    boolean: bool = False
    default: str = ""
    help: str = ""
    value_type: str = "string"
    # Another long name that sets the same value, as `--instance` does for `--machine`.
    alias: str = ""


@dataclass
class ParsedArgs:
    """Flag values by long name (strings, or bools for boolean flags) and positional arguments."""

    values: dict[str, str | bool] = field(default_factory=dict)
    positionals: list[str] = field(default_factory=list)

    def flag(self, name: str) -> bool:
        """Return a boolean flag's value."""
        return bool(self.values.get(name, False))

    def text(self, name: str) -> str:
        """Return a string flag's value, empty when unset."""
        value = self.values.get(name, "")
        return value if isinstance(value, str) else ""


def parse_bool(flag: Flag, text: str) -> bool:
    """Parse a boolean flag value the way strconv.ParseBool does."""
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    raise UsageError(
        f'invalid argument "{text}" for "{flag_label(flag)}" flag: strconv.ParseBool: parsing "{text}": invalid syntax'
    )


def flag_label(flag: Flag) -> str:
    """Format a flag as pflag names it in errors: `-j, --json` or `--json`."""
    if flag.shorthand:
        return f"-{flag.shorthand}, --{flag.name}"
    return f"--{flag.name}"


def _index(flags: list[Flag]) -> tuple[dict[str, Flag], dict[str, Flag]]:
    by_name: dict[str, Flag] = {}
    by_shorthand: dict[str, Flag] = {}
    for flag in flags:
        by_name[flag.name] = flag
        if flag.alias:
            by_name[flag.alias] = flag
        if flag.shorthand:
            by_shorthand[flag.shorthand] = flag
    return by_name, by_shorthand


def parse(args: list[str], flags: list[Flag]) -> ParsedArgs:
    """Split args into flag values and positionals, raising UsageError with pflag's text."""
    by_name, by_shorthand = _index(flags)
    parsed = ParsedArgs()
    for flag in flags:
        parsed.values[flag.name] = (flag.default == "true") if flag.boolean else flag.default

    def store(flag: Flag, text: str | None) -> None:
        if flag.boolean:
            parsed.values[flag.name] = True if text is None else parse_bool(flag, text)
        else:
            parsed.values[flag.name] = text or ""

    index = 0
    while index < len(args):
        argument = args[index]
        index += 1

        if argument == "--":
            parsed.positionals.extend(args[index:])
            break

        if argument.startswith("--"):
            name, has_value, text = argument[2:].partition("=")
            if not name or name.startswith("-") or name.startswith("="):
                raise UsageError(f"bad flag syntax: {argument}")
            flag = by_name.get(name)
            if flag is None:
                raise UsageError(f"unknown flag: --{name}")
            if has_value:
                store(flag, text)
            elif flag.boolean:
                store(flag, None)
            elif index < len(args):
                store(flag, args[index])
                index += 1
            else:
                raise UsageError(f"flag needs an argument: --{name}")
            continue

        if argument.startswith("-") and len(argument) > 1:
            shorthands = argument[1:]
            while shorthands:
                letter = shorthands[0]
                flag = by_shorthand.get(letter)
                if flag is None:
                    raise UsageError(f"unknown shorthand flag: '{letter}' in -{shorthands}")
                if len(shorthands) > 2 and shorthands[1] == "=":
                    store(flag, shorthands[2:])
                    shorthands = ""
                elif flag.boolean:
                    store(flag, None)
                    shorthands = shorthands[1:]
                elif len(shorthands) > 1:
                    store(flag, shorthands[1:])
                    shorthands = ""
                elif index < len(args):
                    store(flag, args[index])
                    index += 1
                    shorthands = ""
                else:
                    raise UsageError(f"flag needs an argument: '{letter}' in -{letter}")
            continue

        parsed.positionals.append(argument)
    return parsed


def first_word(args: list[str], flags: list[Flag]) -> int | None:
    """Return the index of the first argument cobra would take as a subcommand name.

    Like cobra's stripFlags, a flag written without `=` that is not known to be boolean
    is assumed to take the next argument, even when the flag is unknown.
    """
    booleans = {flag.name for flag in flags if flag.boolean} | {flag.alias for flag in flags if flag.boolean and flag.alias}
    boolean_shorthands = {flag.shorthand for flag in flags if flag.boolean and flag.shorthand}
    index = 0
    while index < len(args):
        argument = args[index]
        if argument == "--":
            return None
        if argument.startswith("--") and "=" not in argument and argument[2:] not in booleans:
            index += 2
            continue
        if (
            argument.startswith("-")
            and not argument.startswith("--")
            and "=" not in argument
            and len(argument) == 2
            and argument[1] not in boolean_shorthands
        ):
            index += 2
            continue
        if argument and not argument.startswith("-"):
            return index
        index += 1
    return None
