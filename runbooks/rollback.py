"""Rollback after a failed verification: set the last verified value again, through the
same flyctl path and the same verification, and record it."""

from __future__ import annotations

from bot.runbook.steps import Runbook
from bot.steps.fly_update import UpdateFlySecrets
from bot.steps.record import RecordRotation
from bot.steps.restore import RestoreLastGood
from bot.steps.verify import VerifyDeployment

ROLLBACK = Runbook(
    name="rollback",
    title="Roll back",
    steps=(
        RestoreLastGood(),
        UpdateFlySecrets(),
        VerifyDeployment(),
        RecordRotation(),
    ),
)
