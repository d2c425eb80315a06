"""Slack wording of `/secret diagnose`: the checklist reply, its fix button, and the replies to a click.

The fix buttons carry the value `"<app>:<name>"` (reminder_views.button_value). Deploy and
restart ask for confirmation in Slack's own dialog first, because both restart the app's
machines.
"""

from __future__ import annotations

from typing import Any

from bot.diagnose import Diagnosis, Fix, MachineFinding
from bot.fixes import FixResult
from handlers.messages import (
    BLOCKS_PER_MESSAGE,
    TEXT_LIMIT,
    code_block,
    context,
    escape,
    section,
    truncate,
)
from handlers.reminder_views import button_value

DEPLOY_ACTION_ID = "diagnose_deploy"
RESTART_ACTION_ID = "diagnose_restart"
ROTATE_ACTION_ID = "diagnose_rotate"
# Every action_id of the reply, for the check that each rendered button has a listener.
FIX_ACTION_IDS = {Fix.DEPLOY: DEPLOY_ACTION_ID, Fix.RESTART: RESTART_ACTION_ID, Fix.ROTATE: ROTATE_ACTION_ID}
FIX_LABELS = {Fix.DEPLOY: "Deploy staged secrets", Fix.RESTART: "Restart the app", Fix.ROTATE: "Start a rotation"}

OK_ICON = ":white_check_mark:"
PROBLEM_ICON = ":x:"
WARNING_ICON = ":warning:"
UNKNOWN_ICON = ":grey_question:"
# Machines listed one by one; the rest are counted.
MAX_MACHINE_LINES = 10
LOG_LINE_LENGTH = 200


def checking_ack(name: str, app: str) -> str:
    return f"Checking {name} on {app}: its listing, the machines, recent logs and the last backup…"


def diagnosis_message(diagnosis: Diagnosis, *, fix: Fix | None) -> tuple[str, list[dict[str, Any]]]:
    """Build the reply: one line per check, then the fix that applies as a button."""
    name, app = escape(diagnosis.name), escape(diagnosis.app)
    lines = [_listing_line(diagnosis), _machines_line(diagnosis), _logs_line(diagnosis), _backup_line(diagnosis)]
    blocks: list[dict[str, Any]] = [section(f"*Diagnosis of `{name}` on {app}*"), section("\n".join(lines))]
    if diagnosis.log_mentions:
        shown = "\n".join(f"{line.timestamp} {line.instance or '-'} {truncate(line.message, LOG_LINE_LENGTH)}"
                          for line in diagnosis.log_mentions)
        blocks.append(section(f"Recent log lines that mention `{name}` (values redacted):\n{code_block(shown)}"))
    blocks += _fix_blocks(diagnosis, fix)
    text = truncate(f"Diagnosis of {diagnosis.name} on {diagnosis.app}: {fix_sentence(diagnosis, fix)}", TEXT_LIMIT)
    return text, blocks[:BLOCKS_PER_MESSAGE]


def fix_sentence(diagnosis: Diagnosis, fix: Fix | None) -> str:
    """Say in one sentence which fix applies and why."""
    app = escape(diagnosis.app)
    if fix is Fix.DEPLOY:
        staged = ", ".join(f"`{escape(name)}`" for name in diagnosis.not_deployed)
        if staged:
            return (f"{staged} {'is' if len(diagnosis.not_deployed) == 1 else 'are'} set on Fly but not on every "
                    f"machine: deploy the staged secrets (`flyctl secrets deploy --app {app}`).")
        return f"A machine runs an old release: deploy (`flyctl secrets deploy --app {app}`) updates every machine."
    if fix is Fix.RESTART:
        sick = [f"`{escape(machine.id)}`" for machine in diagnosis.machines if machine.needs_restart]
        subject = f"Machine {sick[0]} is" if len(sick) == 1 else f"Machines {', '.join(sick)} are"
        return f"{subject} not healthy: restart the app (`flyctl apps restart {app}`)."
    if fix is Fix.ROTATE:
        return "The value on Fly is missing or not the one secretbot set: start a rotation for a new value."
    if diagnosis.errors:
        return "No fix found, but some checks could not run (see above)."
    return "Nothing wrong was found."


def _listing_line(diagnosis: Diagnosis) -> str:
    name, app = escape(diagnosis.name), escape(diagnosis.app)
    if "listing" in diagnosis.errors:
        return f"{UNKNOWN_ICON} Listing not checked: {escape(truncate(diagnosis.errors['listing'], 300))}"
    secret = diagnosis.secret
    if secret is None:
        return f"{PROBLEM_ICON} `{name}` is not listed on {app} (`flyctl secrets list`)."
    digest = f"digest `{escape(secret.digest)}`"
    if secret.status == "Staged":
        return f"{WARNING_ICON} `{name}` is *staged*: stored on Fly but on no machine yet ({digest})."
    if secret.status == "Partial":
        return f"{WARNING_ICON} `{name}` is *partly deployed*: only some machines have it ({digest})."
    if secret.status in (None, "Deployed"):
        state = "deployed" if secret.status else "listed (flyctl shows no status for apps over 100 machines)"
        return f"{OK_ICON} `{name}` is {state} on {app} ({digest})."
    return f"{WARNING_ICON} `{name}` has status *{escape(secret.status)}* on {app} ({digest})."


def _machine_text(machine: MachineFinding) -> str:
    return f"`{escape(machine.id)}` ({escape(machine.state)}): " + "; ".join(escape(problem)
                                                                            for problem in machine.problems)


def _machines_line(diagnosis: Diagnosis) -> str:
    if "machines" in diagnosis.errors:
        return f"{UNKNOWN_ICON} Machines not checked: {escape(truncate(diagnosis.errors['machines'], 300))}"
    release = diagnosis.release
    release_text = f"release v{release.version} is {escape(release.status)}" if release else "no release listed"
    unhealthy = diagnosis.unhealthy_machines
    other = [problem for problem in diagnosis.deployment_problems if not problem.startswith("machine ")]
    if not unhealthy and not other:
        return (f"{OK_ICON} {len(diagnosis.machines)} machine(s) started on release v{diagnosis.current_version} "
                f"with passing checks; {release_text}.")
    lines = [f"{PROBLEM_ICON} {len(unhealthy)} of {len(diagnosis.machines)} machine(s) need attention; {release_text}."]
    lines += [f"    • {_machine_text(machine)}" for machine in unhealthy[:MAX_MACHINE_LINES]]
    if len(unhealthy) > MAX_MACHINE_LINES:
        lines.append(f"    • and {len(unhealthy) - MAX_MACHINE_LINES} more")
    lines += [f"    • {escape(problem)}" for problem in other]
    return "\n".join(lines)


def _logs_line(diagnosis: Diagnosis) -> str:
    name = escape(diagnosis.name)
    if "logs" in diagnosis.errors:
        return f"{UNKNOWN_ICON} Logs not checked: {escape(truncate(diagnosis.errors['logs'], 300))}"
    count = diagnosis.log_mention_count
    if not count:
        return f"{OK_ICON} No recent log line mentions `{name}` (`flyctl logs --no-tail`)."
    return f"{WARNING_ICON} {count} recent log line(s) mention `{name}`; the newest are below."


def _backup_line(diagnosis: Diagnosis) -> str:
    backup = diagnosis.backup
    if backup.outcome == "none":
        return f"{WARNING_ICON} Backup: no backup; secretbot has never set this value."
    if backup.outcome == "unverified":
        return (f"{WARNING_ICON} Backup: version {backup.version} was saved but never confirmed on Fly, "
                "so there is no digest to compare.")
    if backup.outcome == "match":
        return f"{OK_ICON} Backup: Fly's digest matches backup version {backup.version}."
    if backup.outcome == "mismatch":
        return (f"{PROBLEM_ICON} Backup: Fly's digest differs from backup version {backup.version} "
                f"(`{escape(backup.backup_digest or '?')}`): the value was changed after secretbot last set it.")
    return f"{UNKNOWN_ICON} Backup: not compared, because the secret is not listed on Fly."


def _fix_blocks(diagnosis: Diagnosis, fix: Fix | None) -> list[dict[str, Any]]:
    blocks = [section(f"*Fix:* {fix_sentence(diagnosis, fix)}")]
    if fix is None:
        return blocks
    button: dict[str, Any] = {
        "type": "button", "action_id": FIX_ACTION_IDS[fix], "style": "primary",
        "value": button_value(diagnosis.app, diagnosis.name),
        "text": {"type": "plain_text", "text": FIX_LABELS[fix]},
    }
    confirm = _confirm_text(diagnosis, fix)
    if confirm is not None:
        button["confirm"] = {
            "title": {"type": "plain_text", "text": FIX_LABELS[fix]},
            "text": {"type": "mrkdwn", "text": confirm},
            "confirm": {"type": "plain_text", "text": "Go ahead"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        }
    blocks.append({"type": "actions", "block_id": f"diagnose:{diagnosis.app}:{diagnosis.name}"[:255],
                   "elements": [button]})
    blocks.append(context(_who_text(fix)))
    return blocks


def _confirm_text(diagnosis: Diagnosis, fix: Fix) -> str | None:
    app = escape(diagnosis.app)
    if fix is Fix.DEPLOY:
        return f"This rolls out every staged secret of {app} and restarts its machines one by one."
    if fix is Fix.RESTART:
        return f"This restarts every started machine of {app}, one by one, on its current release."
    return None


def _who_text(fix: Fix) -> str:
    if fix is Fix.ROTATE:
        return "Starts `/secret rotate` with you as the requester; it waits for approval as usual."
    return "Anyone who may start a runbook may press it; it is recorded in the audit log, and the app is verified after."


def fix_started_reply(fix: Fix, app: str) -> str:
    verb = "Deploying the staged secrets of" if fix is Fix.DEPLOY else "Restarting"
    return f"{verb} {escape(app)}; the result follows here when the app is verified."


def fix_result_reply(fix: Fix, result: FixResult) -> str:
    what = "Deploy of the staged secrets" if fix is Fix.DEPLOY else "Restart"
    if not result.changed:
        return truncate(escape(result.summary), TEXT_LIMIT)
    icon = OK_ICON if result.ok else PROBLEM_ICON
    outcome = "done" if result.ok else "failed"
    return truncate(f"{icon} {what} on {escape(result.app)} {outcome} (`{result.operation_id}`): "
                    f"{escape(result.summary)}", TEXT_LIMIT)


def not_allowed_reply(fix: Fix) -> str:
    return (f"*{FIX_LABELS[fix]}* needs the right to start a runbook, and only the operators in slack.operators "
            "have it. Ask one of them, or an admin of secretbot.toml.")


def busy_reply(message: str) -> str:
    return f"Nothing was changed: {escape(message)}."
