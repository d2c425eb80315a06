"""`secretbot check-config` prints every setting group, so an operator can check a file before deploying it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.config import EXAMPLE_CHANNEL_IDS, EXAMPLE_PERSON_IDS

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


def test_example_ids_warned(monkeypatch: pytest.MonkeyPatch) -> None:
    code, output = check_config(monkeypatch, EXAMPLE_CONFIG)
    warnings = [line for line in output.splitlines() if line.startswith("warning: ")]
    assert code == 0
    assert len(warnings) == 2
    assert "slack.channel is C0123OPS, the placeholder from secretbot.example.toml" in warnings[0]
    assert "About tab" in warnings[0]
    assert "slack.approvers contains U0AAA, U0BBB" in warnings[1]
    assert "Copy member ID" in warnings[1]


def test_every_example_id_warned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "secretbot.toml"
    path.write_text('[slack]\nchannel = "C0TEAMOPS"\napprovers = ["U0ALICE", "U0BBB"]\noperators = ["S0PLATFORM"]\n'
                    'security_channel = "C0456SEC"\n[reminders]\nchannel = "C0123OPS"\n', encoding="utf-8")
    code, output = check_config(monkeypatch, path)
    warnings = [line for line in output.splitlines() if line.startswith("warning: ")]
    assert code == 0
    assert [warning.split()[1] for warning in warnings] == [
        "slack.security_channel", "reminders.channel", "slack.approvers", "slack.operators"]
    assert "U0ALICE" not in output.split("warning: ", 1)[1]


def test_own_ids_not_warned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "secretbot.toml"
    path.write_text('[slack]\nchannel = "C0TEAMOPS"\napprovers = ["U0ALICE"]\n', encoding="utf-8")
    code, output = check_config(monkeypatch, path)
    assert code == 0
    assert "warning" not in output


def test_placeholder_ids_are_the_examples() -> None:
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    for placeholder in EXAMPLE_CHANNEL_IDS | EXAMPLE_PERSON_IDS:
        assert f'"{placeholder}"' in text, placeholder
