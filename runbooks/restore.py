"""Restore after an unset: with the rights of a rotation, set the value the unset kept back on
Fly through the same flyctl path and verification, and record it."""

from __future__ import annotations

from bot.runbook.steps import Runbook
from bot.steps.fly_update import UpdateFlySecrets
from bot.steps.policy_choice import StoredPolicyApproval
from bot.steps.restore_kept import RecordRestored, RestoreKept
from bot.steps.verify import VerifyDeployment

RESTORE = Runbook(
    name="restore",
    title="Restore",
    steps=(
        StoredPolicyApproval(),
        RestoreKept(),
        UpdateFlySecrets(),
        VerifyDeployment(),
        RecordRestored(),
    ),
)
