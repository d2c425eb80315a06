"""Adding a secret that Fly does not have yet, through the rotation's guarded path: choose its
policy and value, approve, back up, set it on Fly with the value on standard input, verify,
record."""

from __future__ import annotations

from bot.runbook.steps import Runbook
from bot.steps.fly_update import UpdateFlySecrets
from bot.steps.new_secret import NewSecretExternalUpdate, NewSecretValue, RecordNewSecret, VerifyNewSecret
from bot.steps.policy_choice import StoredPolicyApproval

ADD = Runbook(
    name="add",
    title="Add",
    steps=(
        # The form comes first: the priority chosen there decides how many approvers are needed.
        NewSecretValue(),
        StoredPolicyApproval(),
        NewSecretExternalUpdate(),
        UpdateFlySecrets(),
        VerifyNewSecret(),
        RecordNewSecret(),
    ),
)
