"""Entry point of the flyctl stand-in: dispatch, error printing, exit codes, invocation log.

Exit codes follow flyctl: 0 success, 1 any error, 3 a Go panic, 127 canceled by SIGINT
or SIGTERM. Code 2 means the stand-in itself cannot run (no state file, or a bug in the
stand-in), which real flyctl never returns.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
import traceback

from . import flags, injection, session
from .commands import GLOBAL_FLAGS, ROOT, Node
from .errors import Canceled, CliError, Panic, StandinError, UsageError
from .runtime import Invocation, StdinReader, install_signal_handlers
from .store import StateFileError

STATE_ENV = "FLYCTL_STANDIN_STATE"
LOG_ENV = "FLYCTL_STANDIN_LOG"
# A folder that receives the standard input of each run in a file of its own, named in the
# log as `stdin_file`. The log itself never holds input, so tests that search it for values
# keep working; only a test that sets this variable gets files that contain values.
STDIN_DIR_ENV = "FLYCTL_STANDIN_STDIN_DIR"

OOPS = "Oops, something went wrong! Could you try that again?"


def _all_flags(node: Node) -> list[flags.Flag]:
    return list(node.flags) + list(GLOBAL_FLAGS)


def find_command(argv: list[str]) -> tuple[list[Node], list[str]]:
    """Walk the tree as cobra's Find does and return the command path and the other args."""
    path = [ROOT]
    rest = list(argv)
    while path[-1].children:
        index = flags.first_word(rest, _all_flags(path[-1]))
        if index is None:
            break
        child = path[-1].child(rest[index])
        if child is None:
            break
        path.append(child)
        del rest[index]
    return path, rest


def _command_path(path: list[Node]) -> str:
    return " ".join(node.name for node in path)


def _flag_lines(flag_list: list[flags.Flag]) -> list[str]:
    """Format flags as pflag's FlagUsages does: aligned names, type, help and default."""
    entries = []
    for flag in sorted(flag_list, key=lambda flag: flag.name):
        left = f"  -{flag.shorthand}, --{flag.name}" if flag.shorthand else f"      --{flag.name}"
        if not flag.boolean:
            left += f" {flag.value_type}"
        help_text = flag.help
        if flag.boolean and flag.default == "true":
            help_text += " (default true)"
        elif not flag.boolean and flag.default:
            help_text += f' (default "{flag.default}")' if flag.value_type == "string" else f" (default {flag.default})"
        entries.append((left, help_text))
    width = max(len(left) for left, _ in entries)
    return [f"{left.ljust(width)}   {help_text}" for left, help_text in entries]


def usage_lines(path: list[Node]) -> list[str]:
    """Build cobra's usage block for a command."""
    node = path[-1]
    command = _command_path(path)
    lines = ["Usage:"]
    if node.run is not None:
        lines.append(f"  {command} [flags] {node.usage}".rstrip())
    if node.children:
        lines.append(f"  {command} [command]")
    if node.aliases:
        lines += ["", "Aliases:", "  " + ", ".join((node.name,) + node.aliases)]
    if node.children:
        lines += ["", "Available Commands:"]
        width = max(len(child.name) for child in node.children)
        lines += [f"  {child.name.ljust(width)}   {child.short}" for child in sorted(node.children, key=lambda n: n.name)]
    local = list(node.flags) + [flags.Flag("help", "h", boolean=True, help=f"help for {node.name}")]
    inherited = [flag for flag in GLOBAL_FLAGS if flag.name != "help"]
    lines += ["", "Flags:"] + _flag_lines(local)
    lines += ["", "Global Flags:"] + _flag_lines(inherited)
    if node.children:
        lines += ["", f'Use "{command} [command] --help" for more information about a command.']
    return lines + [""]


def _print_help(invocation: Invocation, path: list[Node]) -> None:
    invocation.out(path[-1].short)
    invocation.out()
    for line in usage_lines(path):
        invocation.out(line)


def _check_argument_count(node: Node, path: list[Node], positionals: list[str]) -> None:
    if node.arguments == "none" and positionals:
        raise UsageError(f'unknown command "{positionals[0]}" for "{_command_path(path)}"')
    if node.arguments == "min1" and not positionals:
        raise UsageError(f"requires at least 1 arg(s), only received {len(positionals)}")
    if node.arguments == "max1" and len(positionals) > 1:
        raise UsageError(f"accepts at most 1 arg(s), received {len(positionals)}")


def dispatch(invocation: Invocation, argv: list[str]) -> None:
    """Run the command named by argv, raising the errors main() maps to exit codes."""
    path, rest = find_command(argv)
    node = path[-1]
    try:
        invocation.args = flags.parse(rest, _all_flags(node))
    except UsageError:
        for line in usage_lines(path):
            invocation.out(line)
        raise

    if invocation.args.flag("help"):
        _print_help(invocation, path)
        return
    if node is ROOT:
        if invocation.args.flag("version"):
            version_node = ROOT.child("version")
            assert version_node is not None
            path = [ROOT, version_node]
        elif invocation.args.positionals:
            invocation.out("Run 'flyctl --help' for usage.")
            raise CliError(f'unknown command "{invocation.args.positionals[0]}" for "flyctl"')
        else:
            _print_help(invocation, path)
            return
        node = path[-1]
    if node.run is None:
        # cobra prints a group's help and reports success, even for an unknown subcommand.
        _print_help(invocation, path)
        return

    try:
        _check_argument_count(node, path, invocation.args.positionals)
    except UsageError:
        for line in usage_lines(path):
            invocation.out(line)
        raise

    invocation.command_path = node.canonical
    if node.needs_app:
        session.load_config(invocation)
        session.resolve_token(invocation)
        positional = invocation.args.positionals[0] if node.app_from_argument and invocation.args.positionals else ""
        session.resolve_app_name(invocation, positional=positional)

    # Only runs with injections pending write the state here, so plain reads stay reads.
    if invocation.snapshot()["injections"]:
        with invocation.transaction() as state:
            invocation.injection = injection.take(state, invocation.app_name, node.canonical)

    if invocation.failure == "panic":
        raise Panic("runtime error: invalid memory address or nil pointer dereference")
    storing = node.canonical in injection.ROLLOUT_COMMANDS or node.canonical == "secrets sync"
    if invocation.failure == "hang_before_store" or (invocation.failure == "hang" and not storing):
        invocation.hang()
    node.run(invocation)


def print_error(invocation: Invocation, error: CliError) -> None:
    """Print an error as flyctl's printError does: Error line, description, suggestion."""
    line = f"Error: {error.message}"
    if error.request_id:
        line += f" (Request ID: {error.request_id})"
    invocation.err(line)
    if error.description and error.description != error.message:
        invocation.err(error.description)
        invocation.err()
    if error.suggestion:
        invocation.err(error.suggestion)
        invocation.err()


def print_panic(invocation: Invocation, value: str) -> None:
    """Print what flyctl's panic handler prints on stdout."""
    invocation.out(OOPS)
    invocation.out()
    invocation.out(value)
    invocation.out("goroutine 1 [running]:")
    invocation.out("github.com/superfly/flyctl/internal/command/secrets.parseSecrets(...)")
    invocation.out("\t/home/runner/work/flyctl/flyctl/internal/command/secrets/parser.go:1 +0x1d")
    invocation.out("main.main()")
    invocation.out("\t/home/runner/work/flyctl/flyctl/main.go:1 +0x1d")


def run(argv: list[str], env: dict[str, str], stdin: StdinReader) -> int:
    """Run one invocation and return its exit code."""
    state_path = env.get(STATE_ENV, "")
    if not state_path:
        sys.stderr.write(
            f"flyctl stand-in: {STATE_ENV} is not set; set it to a state file created with "
            "tests/standins/fly_state.py FlyState(path)\n"
        )
        return 2

    invocation = Invocation(argv=argv, env=env, state_path=state_path, stdin=stdin)
    try:
        invocation.settings = invocation.snapshot()["settings"]
        dispatch(invocation, argv)
        return 0
    except CliError as error:
        print_error(invocation, error)
        return 1
    except Panic as panic:
        print_panic(invocation, str(panic))
        return 3
    except Canceled:
        invocation.run_cancel_hooks()
        return 127
    except (StateFileError, StandinError) as error:
        sys.stderr.write(f"flyctl stand-in: {error}\n")
        return 2
    except Exception:
        sys.stderr.write("flyctl stand-in: internal error, this is a bug in the stand-in\n" + traceback.format_exc())
        invocation.run_cancel_hooks()
        return 2


def append_invocation_log(path: str, record: dict[str, object]) -> None:
    """Append one JSON line to the invocation log under an exclusive lock."""
    with open(path, "a", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            file.write(json.dumps(record) + "\n")
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


# Variables that `pyenv exec` and its bash shim add on the way to python3. They are
# dropped when PYENV_HOOK_PATH shows that the stand-in was started through a pyenv shim.
_LAUNCHER_VARIABLES = ("PWD", "OLDPWD", "SHLVL", "_")


def caller_environment() -> dict[str, str]:
    """Return the environment the caller gave the stand-in, without launcher additions.

    Python adds LC_CTYPE to os.environ when it coerces the C locale to UTF-8, so the
    environment is read from /proc/self/environ, which keeps what exec received
    (os.environ is the fallback off Linux). When a pyenv shim started python3, the
    variables it added are removed too, so a caller's minimal environment is logged as
    given. A caller that passes PYENV_* variables itself loses them from the log.
    """
    try:
        with open("/proc/self/environ", "rb") as file:
            raw = file.read()
    except OSError:
        return dict(os.environ)
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, separator, value = entry.partition(b"=")
        if separator:
            env[os.fsdecode(name)] = os.fsdecode(value)

    if "PYENV_HOOK_PATH" in env:
        env = {
            name: value
            for name, value in env.items()
            if not name.startswith(("PYENV_", "_PYENV_")) and name not in _LAUNCHER_VARIABLES
        }
    return env


def save_stdin(directory: str, data: bytes) -> str:
    """Write one run's standard input to a new file in `directory` (mode 0600) and return its name."""
    name = f"{time.time_ns()}-{os.getpid()}.stdin"
    descriptor = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    return name


def main(argv: list[str]) -> int:
    """Run the stand-in and log the invocation: argv, cwd, env names, stdin size, exit code.

    The log records names of environment variables but never their values, and the
    number of stdin bytes read but never their content. With FLYCTL_STANDIN_STDIN_DIR set,
    the content goes to a file of its own in that folder.
    """
    started = time.time()
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(encoding="utf-8", errors="surrogateescape")  # type: ignore[attr-defined]
    install_signal_handlers()
    env = caller_environment()
    stdin = StdinReader()

    exit_code = 2
    try:
        exit_code = run(argv, env, stdin)
    except Canceled:
        exit_code = 127
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log_path = env.get(LOG_ENV, "")
        if log_path:
            try:
                cwd = os.getcwd()
            except OSError:
                cwd = ""
            record: dict[str, object] = {
                "argv": argv,
                "cwd": cwd,
                "env_keys": sorted(env),
                "stdin_bytes": stdin.bytes_read,
                "exit_code": exit_code,
                "started": started,
                "ended": time.time(),
            }
            stdin_dir = env.get(STDIN_DIR_ENV, "")
            if stdin_dir and stdin.bytes_read:
                record["stdin_file"] = save_stdin(stdin_dir, stdin.data)
            append_invocation_log(log_path, record)
    return exit_code
