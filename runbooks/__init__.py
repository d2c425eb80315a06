"""Runbook definitions, each an ordered list of step kinds that the engine runs."""

from __future__ import annotations

from bot.runbook.steps import Runbook
from runbooks.add import ADD
from runbooks.compromised import COMPROMISED
from runbooks.lost import LOST
from runbooks.restore import RESTORE
from runbooks.rollback import ROLLBACK
from runbooks.rotate import ROTATE
from runbooks.unset import UNSET

RUNBOOKS: dict[str, Runbook] = {
    runbook.name: runbook for runbook in (ROTATE, COMPROMISED, LOST, ROLLBACK, ADD, UNSET, RESTORE)
}
