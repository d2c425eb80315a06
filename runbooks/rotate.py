"""Scheduled rotation, as in the team's written procedure: approve, generate, update the
external service, set on Fly, verify the restart, record."""

from __future__ import annotations

from bot.runbook.steps import Runbook
from bot.steps.approval import Approval
from bot.steps.external import ExternalUpdate
from bot.steps.fly_update import UpdateFlySecrets
from bot.steps.record import RecordRotation
from bot.steps.values import NewValues
from bot.steps.verify import VerifyDeployment

ROTATE = Runbook(
    name="rotate",
    title="Rotate",
    steps=(
        Approval(),
        NewValues(),
        ExternalUpdate(),
        UpdateFlySecrets(),
        VerifyDeployment(),
        RecordRotation(),
    ),
    needs_secret_policies=True,
)
