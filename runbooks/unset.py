"""Removing a secret from Fly: keep its backup for a restore, approve, `flyctl secrets unset`,
verify the restart, record. A Restore button on the run puts the kept value back."""

from __future__ import annotations

from bot.runbook.steps import Runbook
from bot.steps.fly_unset import UnsetFlySecrets
from bot.steps.unset import KeepBackup, RecordUnset, UnsetApproval, VerifyUnset

UNSET = Runbook(
    name="unset",
    title="Unset",
    steps=(
        # Before approval, so that the approvers know whether the value can come back.
        KeepBackup(),
        UnsetApproval(),
        UnsetFlySecrets(),
        VerifyUnset(),
        RecordUnset(),
    ),
)
