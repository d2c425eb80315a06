"""A leaked secret, as in the team's written procedure: revoke at the source at once,
make or enter the new value, set it on Fly, verify, and document the incident."""

from __future__ import annotations

from bot.runbook.steps import Runbook
from bot.steps.approval import BreakGlassApproval
from bot.steps.fly_update import UpdateFlySecrets
from bot.steps.incident import RecordIncident
from bot.steps.revoke import RevokeAtSource
from bot.steps.values import NewValues
from bot.steps.verify import VerifyDeployment

COMPROMISED = Runbook(
    name="compromised",
    title="Compromised",
    steps=(
        BreakGlassApproval(),
        RevokeAtSource(),
        NewValues(),
        UpdateFlySecrets(),
        VerifyDeployment(),
        RecordIncident(),
    ),
    needs_secret_policies=True,
)
