"""`secretbot check-config` prints every setting group, so an operator can check a file before deploying it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "secretbot.example.toml"


def check_config(monkeypatch: pytest.MonkeyPatch, path: Path) -> tuple[int, str]:
    monkeypatch.setenv("SECRETBOT_CONFIG", str(path))
    result = CliRunner().invoke(main, ["check-config"])
    return result.exit_code, result.output


def test_example_config_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    code, output = check_config(monkeypatch, EXAMPLE_CONFIG)
    assert code == 0
    assert "operators: everyone in the workspace" in output
    assert "approval: one approver; requests expire after 86400 s" in output
    assert "daily reminder: 09:00:00 Europe/Berlin in C0123OPS" in output
    assert "inventory sync: every 3600 s, 8 flyctl calls at once" in output


def test_reminder_off_without_channel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "secretbot.toml"
    path.write_text("[inventory]\nsync_interval = 0.0\n", encoding="utf-8")
    code, output = check_config(monkeypatch, path)
    assert code == 0
    assert "daily reminder: off" in output
    assert "inventory sync: at start-up and on demand only" in output


def test_invalid_file_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "secretbot.toml"
    path.write_text("[reminders]\ntime = '25:00'\n", encoding="utf-8")
    code, output = check_config(monkeypatch, path)
    assert code == 2
    assert "reminders.time" in output
