"""Every Slack message secretbot posts, built in one place so the wording stays consistent.

Text from outside (flyctl output, reasons, step details) is escaped before it goes into
mrkdwn, so `<!channel>` or `<@U123>` in it cannot ping anyone. Block Kit limits
(3000 characters per section, 150 per header, 50 blocks per message) are enforced here.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any

from bot.runbook.steps import ValueInput
from bot.runbook.views import RunView, StepView

SECTION_LIMIT = 3000
HEADER_LIMIT = 150
# chat.update rejects top-level text over 4000 characters (msg_too_long).
TEXT_LIMIT = 3900
BLOCKS_PER_MESSAGE = 50

STATUS_ICONS = {
    "pending": ":white_circle:",
    "running": ":hourglass_flowing_sand:",
    "waiting": ":raised_hand:",
    "done": ":white_check_mark:",
    "skipped": ":heavy_minus_sign:",
    "failed": ":x:",
}
RUN_STATUS_TEXT = {
    "pending": "starting",
    "running": "running",
    "waiting": "waiting for input",
    "succeeded": "done",
    "failed": "failed",
    "denied": "denied",
    "expired": "expired",
    "cancelled": "cancelled",
}
DECISION_VERBS = {
    "approve": "approved", "deny": "denied", "done": "confirmed", "enter": "answered", "expire": "expired",
    "restore": "answered", "regenerate": "answered", "review": "answered", "define": "answered",
}
ACTION_PREFIX = "step_"
# Runbooks for an incident get a siren in the header so they stand out in the channel.
ALERT_KINDS = ("compromised",)
ALERT_PREFIX = "\N{POLICE CARS REVOLVING LIGHT} "


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# User (U, W) and user group (S) IDs: an uppercase letter, then uppercase letters and digits.
_SLACK_ID = re.compile(r"[UWS][A-Z0-9]{2,}")


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def mention(user_id: str) -> str:
    """Return Slack's mention of a user, or of a user group for an S… ID.

    Actors that are not Slack IDs (`local:alice` for a terminal run, `secretbot` for the
    bot itself) are shown as plain text, since `<@local:alice>` would render as a broken
    mention.
    """
    if not _SLACK_ID.fullmatch(user_id):
        return escape(user_id)
    if user_id.startswith("S"):
        return f"<!subteam^{user_id}>"
    return f"<@{user_id}>"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION_LIMIT)}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, SECTION_LIMIT)}]}


def code_block(text: str, limit: int = 2500) -> str:
    """Wrap output in a code block of at most `limit` characters, fences included."""
    # Three backticks inside the output would close the block early. Escaping can grow
    # the text, so it is cut after escaping and the fences are added last.
    body = truncate(escape(text.replace("```", "'''")), limit - 6)
    return "```" + body + "```"


def run_headline(run: RunView) -> str:
    return f"{run.title} {', '.join(run.secret_names)} on {run.app}"


def _actor_text(actor: str) -> str:
    """Return a mention of a Slack user, or the plain name of the bot itself (an expiry, an automatic rotation)."""
    return mention(actor) if actor[:1] in ("U", "W") else escape(actor)


def step_line(run: RunView, step: StepView) -> str:
    icon = STATUS_ICONS.get(step.status, ":grey_question:")
    line = f"{icon} {step.position + 1}. *{escape(step.title)}*"
    if step.status == "pending" and run.finished:
        return line + " (not run)"
    if step.status in ("done", "skipped", "failed") and step.detail:
        first_line = step.detail.splitlines()[0]
        line += f": {escape(truncate(first_line, 300))}"
    if step.status == "done" and len(step.approvers) > 1:
        line += " (" + ", ".join(mention(user) for user in step.approvers) + ")"
    elif step.actor and step.status in ("done", "failed"):
        line += f" ({_actor_text(step.actor)})"
    if step.status == "waiting":
        line += ": waiting"
    return line


def parent_message(run: RunView) -> tuple[str, list[dict[str, Any]]]:
    """Build the run's parent message: a header, who and why, the live checklist and buttons."""
    status = RUN_STATUS_TEXT.get(run.status, run.status)
    text = truncate(f"{run_headline(run)}: {status}", TEXT_LIMIT)
    alert = ALERT_PREFIX if run.kind in ALERT_KINDS else ""
    header = truncate(alert + run_headline(run), HEADER_LIMIT)
    about = f"Requested by {_actor_text(run.requester)} · run `{run.id}` · status: *{status}*"
    if run.reason:
        about += f"\nReason: {escape(run.reason)}"

    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header}},
        section(about),
        section("\n".join(step_line(run, step) for step in run.steps)),
    ]
    waiting = run.waiting_step
    if waiting is not None and waiting.actions and not run.finished:
        blocks.append(section(f"*{escape(waiting.title)}*\n{escape(waiting.detail or '')}"))
        blocks.append(action_buttons(run, waiting))
        if waiting.allowed_users:
            blocks.append(context("Can answer: " + ", ".join(mention(user) for user in waiting.allowed_users)))
    if run.finished and run.outcome:
        blocks.append(section(f"*Outcome:* {escape(truncate(run.outcome, 2500))}"))
    restore_claim = restore_claimer(run)
    if restore_claim is not None:
        blocks.append(context(f"Restore started by {mention(restore_claim)}."))
    if offers_retry(run) or offers_recovery(run) or offers_restore(run):
        blocks.append(recovery_buttons(run))
    return text, blocks[:BLOCKS_PER_MESSAGE]


ROLLBACK_ACTION_ID = "run_rollback"
LOGS_ACTION_ID = "run_logs"
RETRY_ACTION_ID = "run_retry"
RESTORE_ACTION_ID = "run_restore"
# Runbooks that get no Roll back button. A rollback is not rolled back again. A compromised run
# would get the leaked value back. An add has no earlier value. An unset has Restore instead,
# and a restore has Retry.
NO_ROLLBACK_KINDS = ("rollback", "compromised", "add", "unset", "restore")


def offers_recovery(run: RunView) -> bool:
    """Return whether a run failed after changing Fly, so rollback and logs are offered."""
    failed_step = run.steps[run.current_step] if run.steps else None
    return (
        run.status == "failed"
        and run.kind not in NO_ROLLBACK_KINDS
        and failed_step is not None
        and failed_step.kind == "verify"
    )


def offers_retry(run: RunView) -> bool:
    """Return whether a run stopped with a failure, expired or was cancelled, so a Retry button starts it again."""
    # A rollback is retried with the Roll back button of the run it rolls back.
    return run.status in ("failed", "expired", "cancelled") and run.kind != "rollback"


def _step_of_kind(run: RunView, kind: str) -> StepView | None:
    return next((step for step in run.steps if step.kind == kind), None)


def offers_restore(run: RunView) -> bool:
    """Return whether an ended unset removed a secret whose backup it kept, with no Restore click recorded yet.

    The offer stays after a failed verification too, because an app that fails without the
    secret is the usual reason to restore it.
    """
    kept = _step_of_kind(run, "keep_backup")
    removed = _step_of_kind(run, "fly_unset")
    return (run.kind == "unset" and run.finished and kept is not None and kept.status == "done"
            and removed is not None and removed.status == "done" and restore_claimer(run) is None)


def restore_claimer(run: RunView) -> str | None:
    """Return who pressed Restore on an unset run, from the claim recorded on its backup step."""
    kept = _step_of_kind(run, "keep_backup") if run.kind == "unset" else None
    if kept is None:
        return None
    return next((user for user, action in kept.decisions if action == "restore"), None)


def recovery_buttons(run: RunView) -> dict[str, Any]:
    elements: list[dict[str, Any]] = []
    if offers_restore(run):
        elements.append({"type": "button", "action_id": RESTORE_ACTION_ID, "style": "primary", "value": run.id,
                         "text": {"type": "plain_text", "text": "Restore"}})
    if offers_retry(run):
        elements.append({"type": "button", "action_id": RETRY_ACTION_ID, "value": run.id,
                         "text": {"type": "plain_text", "text": "Retry"}})
    if offers_recovery(run):
        elements += [
            {"type": "button", "action_id": ROLLBACK_ACTION_ID, "style": "danger", "value": run.id,
             "text": {"type": "plain_text", "text": "Roll back"}},
            {"type": "button", "action_id": LOGS_ACTION_ID, "value": run.id,
             "text": {"type": "plain_text", "text": "Show logs"}},
        ]
    return {"type": "actions", "block_id": f"recovery:{run.id}:{time.monotonic_ns()}", "elements": elements}


def logs_reply(app: str, lines: list[str]) -> str:
    if not lines:
        return f"No recent log lines from {escape(app)}."
    return truncate(f"Recent log lines from {escape(app)} (known values redacted):\n" + code_block("\n".join(lines), 3500),
                    TEXT_LIMIT)


def action_buttons(run: RunView, step: StepView) -> dict[str, Any]:
    # A new block_id per rendering keeps Slack from reusing the state of an earlier one.
    block_id = f"actions:{run.id}:{step.position}:{time.monotonic_ns()}"
    elements = []
    for action in step.actions:
        button: dict[str, Any] = {
            "type": "button",
            "action_id": f"{ACTION_PREFIX}{action.name}",
            "text": {"type": "plain_text", "text": action.label},
            "value": f"{run.id}:{step.position}",
        }
        if action.style:
            button["style"] = action.style
        elements.append(button)
    return {"type": "actions", "block_id": block_id, "elements": elements}


VALUE_MODAL_CALLBACK = "enter_values"
VALUE_BLOCK_PREFIX = "value:"
VALUE_ACTION_ID = "value"
# Slack caps a plain_text_input at 3000 characters.
VALUE_MAX_LENGTH = 3000


def value_modal(run: RunView, step: StepView, inputs: tuple[ValueInput, ...], *, action: str = "enter") -> dict[str, Any]:
    """Build the modal in which a person enters provider-issued values or other text for a step."""
    intro = f"*{escape(run_headline(run))}* (run `{run.id}`)"
    if any(item.secret for item in inputs):
        intro += (
            "\nSlack has no masked input, so what you type is visible on your screen only. "
            "The value goes to secretbot, is kept encrypted until it is set on Fly, and is never posted in Slack."
        )
    blocks: list[dict[str, Any]] = [section(intro)]
    for item in inputs:
        label = item.label or f"New value of {item.name}"
        block: dict[str, Any] = {
            "type": "input",
            "block_id": f"{VALUE_BLOCK_PREFIX}{item.name}",
            "label": {"type": "plain_text", "text": truncate(label, 2000)},
            "element": {
                "type": "plain_text_input",
                "action_id": VALUE_ACTION_ID,
                "multiline": True,
                "max_length": VALUE_MAX_LENGTH,
            },
        }
        if item.hint:
            block["hint"] = {"type": "plain_text", "text": truncate(item.hint, 2000)}
        blocks.append(block)
    return {
        "type": "modal",
        "callback_id": VALUE_MODAL_CALLBACK,
        "private_metadata": json.dumps({"run_id": run.id, "position": step.position, "action": action}),
        "title": {"type": "plain_text", "text": "Enter new value" if action == "enter" else truncate(step.title, 24)},
        "submit": {"type": "plain_text", "text": "Save"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def values_from_view(state_values: dict[str, Any]) -> dict[str, str]:
    """Read the entered values out of a view_submission's `view.state.values`."""
    values: dict[str, str] = {}
    for block_id, actions in state_values.items():
        if not block_id.startswith(VALUE_BLOCK_PREFIX) or not isinstance(actions, dict):
            continue
        element = actions.get(VALUE_ACTION_ID)
        value = element.get("value") if isinstance(element, dict) else None
        values[block_id[len(VALUE_BLOCK_PREFIX) :]] = value if isinstance(value, str) else ""
    return values


def step_reply(run: RunView, step: StepView) -> str | None:
    """Return the thread reply for a step's new status, or None when nothing is worth posting."""
    prefix = f"*Step {step.position + 1}/{len(run.steps)}: {escape(step.title)}*"
    if step.status == "running":
        return None if step.actions else f"{STATUS_ICONS['running']} {prefix} started."
    if step.status == "waiting":
        lines = [f"{STATUS_ICONS['waiting']} {prefix}", escape(step.detail or "")]
        if step.allowed_users:
            lines.append("Can answer: " + ", ".join(mention(user) for user in step.allowed_users))
        lines.append("Use the buttons on the message above.")
        return truncate("\n".join(line for line in lines if line), TEXT_LIMIT)
    icon = STATUS_ICONS.get(step.status, "")
    detail = escape(step.detail or "")
    by = f" by {mention(step.actor)}" if step.actor and step.status in ("done", "failed") else ""
    return truncate(f"{icon} {prefix}{by}\n{detail}".rstrip(), TEXT_LIMIT)


def progress_reply(run: RunView, step: StepView, message: str) -> str:
    head, _, rest = message.partition("\n")
    text = f"{STATUS_ICONS['running']} *{escape(step.title)}*: {truncate(escape(head), 1000)}"
    if rest:
        text += "\n" + code_block(rest)
    return truncate(text, TEXT_LIMIT)


def summary_reply(run: RunView) -> str:
    approval = next((step for step in run.steps if step.kind == "approval"), None)
    deniers = [user for user, action in approval.decisions if action == "deny"] if approval else []
    lines = [f"*Summary: {escape(run_headline(run))}* is *{RUN_STATUS_TEXT.get(run.status, run.status)}*"]
    decided = ""
    if approval is not None and deniers and run.status == "denied":
        decided = f", denied by {mention(deniers[0])}"
    elif approval is not None and approval.status == "done" and approval.approvers:
        decided = ", approved by " + " and ".join(mention(user) for user in approval.approvers)
    lines.append(f"Requested by {_actor_text(run.requester)}{decided}")
    if run.reason:
        lines.append(f"Reason: {escape(run.reason)}")
    for secret in run.secrets:
        if secret.digest_before or secret.digest_after:
            lines.append(f"{secret.name}: digest {_digest_text(secret.digest_before, unknown='`?`')} → "
                         f"{_digest_text(secret.digest_after, unknown='`unchanged`')}")
    if run.finished_at:
        lines.append(f"Took {_duration(run.created_at, run.finished_at)}; run `{run.id}`.")
    if run.status != "succeeded" and run.outcome:
        lines.append(f"Reason for stopping: {escape(truncate(run.outcome, 1500))}")
    return truncate("\n".join(lines), TEXT_LIMIT)


def _digest_text(digest: str | None, *, unknown: str) -> str:
    """Return the text for a recorded digest.

    An empty digest means that Fly did not list the secret: before an add, or after an unset.
    """
    if digest == "":
        return "not set"
    return f"`{digest}`" if digest else unknown


def started_reply(run: RunView, permalink: str | None) -> str:
    where = f"<{permalink}|the runbook thread>" if permalink else "the runbook channel"
    return f"Started {escape(run_headline(run))} (run `{run.id}`). Follow it in {where}."


def not_posted_reply(channel: str | None, error: str) -> str:
    where = f"<#{channel}>" if channel else "the runbook channel"
    return (
        f"The rotation was stopped before any change: it could not be posted in {where} ({escape(error)}). "
        "Check slack.channel in secretbot.toml and that the bot can post there (invite it to a private channel)."
    )


def starting_ack(kind: str, names: tuple[str, ...], app: str) -> str:
    what = {
        "rotate": "the rotation of",
        "compromised": "the compromised-secret runbook for",
        "lost": "the lost-secret runbook for",
        "rollback": "the rollback of",
        "add": "the addition of",
        "unset": "the removal of",
    }.get(kind, kind)
    return f"Starting {what} {', '.join(names)} on {app}…"


def approvers_notice(run: RunView, approvers: tuple[str, ...], *, break_glass: bool) -> str:
    people = ", ".join(mention(user) for user in approvers) or "no approvers configured"
    how = "break-glass, no approval wait" if break_glass else "an approver must approve first"
    return (
        f"{ALERT_PREFIX}{mention(run.requester)} started the compromised-secret runbook for "
        f"{escape(', '.join(run.secret_names))} on {escape(run.app)} ({how}). Approvers: {people}."
    )


def security_notice_failed(channel: str, error: str) -> str:
    return f"The security channel <#{channel}> could not be told about this run ({escape(error)}); tell it by hand."


def security_notice(run: RunView, permalink: str | None) -> str:
    where = f" <{permalink}|Runbook thread>." if permalink else ""
    reason = f" What happened: {escape(run.reason)}." if run.reason else ""
    return (
        f"{ALERT_PREFIX}Compromised secret: {escape(', '.join(run.secret_names))} on {escape(run.app)}, "
        f"reported by {mention(run.requester)}.{reason}{where}"
    )


def already_open_reply(secret: str, app: str, permalink: str | None) -> str:
    where = f": <{permalink}|open run>" if permalink else "."
    return f"{secret} on {app} already has a run in progress{where} Finish or stop that one first."


def takeover_rejected_reply(secret: str, app: str, *, run_id: str, step_title: str, step_status: str,
                            requester: str | None, approvers: tuple[str, ...], permalink: str | None) -> str:
    """Explain why a compromise response could not take over the open run on the same secret."""
    where = f" (<{permalink}|open run>)" if permalink else ""
    cancellers = []
    if requester is not None:
        cancellers.append(f"{mention(requester)} (its requester)")
    others = [user for user in approvers if user != requester]
    if others:
        cancellers.append("an approver: " + ", ".join(mention(user) for user in others))
    who = " or ".join(cancellers) or "an approver listed in slack.approvers"
    lines = [
        f"{secret} on {app} already has run `{run_id}` in progress{where}, at step *{escape(step_title)}* "
        f"({escape(step_status)}).",
        "A compromise response takes over only a routine rotation that has not been approved yet, "
        "so the compromised-secret runbook was not started.",
        f"`/secret cancel {run_id} REASON` stops that run; {who} can cancel it.",
    ]
    if step_status == "running":
        lines.append("A running step has to end before the run can be cancelled.")
    return "\n".join(lines)


def already_decided_reply(user_id: str, action: str, decided_at: datetime) -> str:
    verb = DECISION_VERBS.get(action, action)
    return f"This step was already {verb} by {mention(user_id)} at {decided_at:%Y-%m-%d %H:%M:%S} UTC."


def rollback_started_reply(user_id: str, permalink: str | None) -> str:
    where = f" <{permalink}|Follow the rollback>." if permalink else ""
    return f"{mention(user_id)} started a rollback to the last verified value.{where}"


def restore_started_reply(user_id: str, permalink: str | None) -> str:
    where = f" <{permalink}|Follow the restore>." if permalink else ""
    return f"{mention(user_id)} started a restore of the kept backup; it waits for an approver.{where}"


def restore_taken_reply(user_id: str, claimed_at: datetime) -> str:
    return (f"Nothing was changed: {mention(user_id)} already pressed Restore at {claimed_at:%Y-%m-%d %H:%M:%S} UTC; "
            "follow that restore in this thread.")


def retry_started_reply(user_id: str, permalink: str | None) -> str:
    where = f" <{permalink}|Follow the new run>." if permalink else ""
    return f"{mention(user_id)} started this runbook again as a new run.{where}"


def rejected_reply(reason: str) -> str:
    return f"Nothing was changed: {escape(reason)}"


def _duration(start: datetime, end: datetime) -> str:
    seconds = int((end - start).total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60} s"
