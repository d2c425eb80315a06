"""The command line loads each subcommand's module only when that subcommand is used."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from bot.cli import LAZY_COMMANDS, main


def test_importing_cli_loads_no_subcommand_module() -> None:
    modules = sorted({target.split(":")[0] for target in LAZY_COMMANDS})
    script = ("import sys\nimport bot.cli\nimport bot.server\n"
              f"print(sorted(name for name in {modules!r} if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)

    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_lazy_command_resolves(name: str) -> None:
    command = main.get_command(click.Context(main), name)

    assert isinstance(command, click.Command)
    assert command.name == name


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])

    assert result.exit_code == 0
    for name in [*LAZY_COMMANDS, "serve", "check-config", "pending"]:
        assert f"  {name} " in result.output
