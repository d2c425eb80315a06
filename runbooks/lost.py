"""A lost secret, as in the team's written procedure: check backups, restore or regenerate,
update Fly, test, and review what will prevent it next time."""

from __future__ import annotations

from bot.runbook.steps import Runbook
from bot.steps.approval import Approval
from bot.steps.backup_check import CheckBackups
from bot.steps.fly_update import UpdateFlySecrets
from bot.steps.review import Review
from bot.steps.values import NewValues
from bot.steps.verify import VerifyDeployment

LOST = Runbook(
    name="lost",
    title="Lost",
    steps=(
        # Restoring or regenerating changes production, so it waits for an approver.
        Approval(),
        CheckBackups(),
        NewValues(require_listed=False),
        UpdateFlySecrets(),
        VerifyDeployment(),
        Review(),
    ),
    needs_secret_policies=True,
)
