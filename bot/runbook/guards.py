"""The check that a run may still change its app, made again after the run was opened.

secretbot.toml is read when a process starts, so a run opened before a restart can find
its app removed from fly.apps, the list of apps the bot may change, or one of its secrets
without a policy. The engine repeats the check when a run is approved and before a step
that changes Fly, and ends the run there, before anything on Fly is changed.
"""

from __future__ import annotations

from bot.policy import Policy
from bot.runbook.steps import Runbook, StepKind
from bot.runbook.views import RunView


def checks_configuration(step_kind: StepKind) -> bool:
    """Tell whether the engine checks the run's configuration before the step starts.

    Such a step changes Fly, or requests the approval that lets the run change it.
    """
    return step_kind.changes_fly or any(action.name == "approve" for action in step_kind.actions)


def configuration_problem(run: RunView, runbook: Runbook, policy: Policy) -> str | None:
    """Return why the run may no longer change its app, or None when it may.

    The text names the app or the secrets and the fix. It states that the run changed nothing
    on Fly, which is true because each runbook changes Fly in one step and the engine checks first.
    """
    if run.app not in policy.fly.apps:
        return (
            f"the app {run.app} is no longer in fly.apps in secretbot.toml, so the bot may not change it. "
            "This run changed nothing on Fly. Add it back to fly.apps in secretbot.toml, or start a new run."
        )
    if not runbook.needs_secret_policies:
        return None
    missing = [name for name in run.secret_names if policy.secret_for(run.app, name) is None]
    if not missing:
        return None
    names = ", ".join(missing)
    return (
        f"{names} on {run.app} is no longer in secretbot.toml nor added with `/secret add`, so there is no "
        "policy to rotate it by. This run changed nothing on Fly. Add its [secrets.NAME] table back to "
        "secretbot.toml, or start a new run."
    )
