"""Slack wording for the inventory: `/secret status`, `history`, `rotated`, `sync`, the snooze form and the Home tab.

Limits: a message has at most 50 blocks and a Home tab at most 100, and section text is
at most 3000 characters (messages.py holds the constants). Lists that would not fit end
with a count of what was left out.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.inventory import SecretStatus, State
from bot.inventory.status_cache import StatusOverview
from bot.inventory.sync import AppSync
from bot.inventory.urgency import count_states
from bot.overview import OpenRun, SecretHistory
from bot.storage.models import AuditRecord
from handlers.command_text import MAX_REASON_LENGTH, reason_problem
from handlers.messages import (
    BLOCKS_PER_MESSAGE,
    RUN_STATUS_TEXT,
    SECTION_LIMIT,
    TEXT_LIMIT,
    context,
    escape,
    mention,
    section,
    truncate,
)

STATE_ICONS = {
    State.OVERDUE: ":red_circle:",
    State.STAGED: ":large_orange_circle:",
    State.DUE_SOON: ":large_yellow_circle:",
    State.CHANGED_OUTSIDE: ":warning:",
    State.RUNNING: ":hourglass_flowing_sand:",
    State.SNOOZED: ":zzz:",
    State.OK: ":large_green_circle:",
}
# NOTE: Slack rejects a message whose blocks hold too much text (msg_blocks_too_long) without
# publishing the limit; this budget is a guess. Lines beyond it are counted, not shown.
MESSAGE_TEXT_BUDGET = 12_000
# views.publish rejects a view over 250 kB (view_too_large); the Home tab keeps well under it.
HOME_TEXT_BUDGET = 60_000
# One line never fills a section on its own, so packing always makes progress.
MAX_LINE_LENGTH = 400
# The maximum number of statuses that a `/secret status` reply reads. Every status line is
# at least MIN_STATUS_LINE_LENGTH characters (tests/test_status_cache.py checks the shortest
# possible one), and pack_lines counts each line and its line break against
# MESSAGE_TEXT_BUDGET, so no more lines fit, plus the one line that pack_lines rejects.
MIN_STATUS_LINE_LENGTH = 60
STATUS_LINES_MAX = MESSAGE_TEXT_BUDGET // (MIN_STATUS_LINE_LENGTH + 1) + 1
HOME_BLOCK_LIMIT = 100
# Each overdue secret on the Home tab is one block with its own Rotate button.
MAX_HOME_BUTTONS = 30
MAX_HOME_RUNS = 15
_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}\Z")


def _day(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d}"


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def state_text(status: SecretStatus) -> str:
    """Describe a secret's state in a few words, e.g. "overdue by 12 days"."""
    if status.state is State.OVERDUE:
        return "due today" if status.overdue_days == 0 else f"overdue by {_days(status.overdue_days)}"
    if status.state is State.DUE_SOON:
        left = status.days_until_due
        return "due within a day" if left == 0 else f"due in {_days(left)}"
    if status.state is State.SNOOZED:
        text = f"snoozed until {_day(status.snoozed_until)}" if status.snoozed_until else "snoozed"
        if status.snoozed_by:
            text += f" by {_person(status.snoozed_by)}"
        if status.snooze_reason:
            text += f": {escape(truncate(status.snooze_reason, 200))}"
        return text
    if status.state is State.RUNNING:
        return f"rotation running (run `{status.open_run_id}`)"
    if status.state is State.CHANGED_OUTSIDE:
        when = status.changed_outside_at or status.last_rotated_at
        return f"changed outside secretbot on {_day(when)}" if when else "changed outside secretbot"
    if status.state is State.STAGED:
        return "staged on Fly, not yet deployed"
    return "ok"


def status_line(status: SecretStatus) -> str:
    """Format one secret as a mrkdwn line: state icon, name, app, priority, last rotation, age, due date, state."""
    if status.last_rotated_at is not None:
        rotated = f"rotated {_day(status.last_rotated_at)} ({_days(status.age_days)} ago)"
    else:
        rotated = f"last rotation unknown, first seen {_day(status.first_seen_at)} ({_days(status.age_days)} ago)"
    line = (
        f"{STATE_ICONS[status.state]} *{escape(status.name)}* on {escape(status.app)} · {status.priority.value} · "
        f"{rotated} · due {_day(status.due_at)} · *{state_text(status)}*"
    )
    if status.snoozed and status.state is not State.SNOOZED and status.snoozed_until is not None:
        # A snooze made before the secret fell due still keeps it out of the reminder then.
        line += f" · reminder snoozed until {_day(status.snoozed_until)}"
    return truncate(line, MAX_LINE_LENGTH)


def _counts_text(statuses: list[SecretStatus]) -> str:
    return _state_counts_text(count_states(statuses))


def _state_counts_text(counts: Mapping[State, int]) -> str:
    return ", ".join(f"{count} {state.value}" for state, count in counts.items())


def pack_lines(lines: Iterable[str], *, max_blocks: int, max_chars: int) -> tuple[list[dict[str, Any]], int]:
    """Join lines into as few sections as fit SECTION_LIMIT; return the sections and how many lines they hold.

    Packing stops at `max_blocks` sections or `max_chars` characters in all.
    """
    blocks: list[dict[str, Any]] = []
    current: list[str] = []
    size = 0
    total = 0
    shown = 0
    for line in lines:
        line = truncate(line, MAX_LINE_LENGTH)
        total += len(line) + 1
        if total > max_chars:
            break
        if current and size + 1 + len(line) > SECTION_LIMIT:
            if len(blocks) + 1 >= max_blocks:
                break
            blocks.append(section("\n".join(current)))
            current, size = [], 0
        current.append(line)
        size += len(line) + (1 if size else 0)
        shown += 1
    if current and len(blocks) < max_blocks:
        blocks.append(section("\n".join(current)))
    elif current:
        shown -= len(current)
    return blocks, shown


def _left_out(statuses: list[SecretStatus], shown: int) -> str:
    rest = statuses[shown:]
    return _left_out_text(len(rest), count_states(rest))


def _left_out_text(left_out: int, counts: Mapping[State, int]) -> str:
    return f"…and {left_out} more ({_state_counts_text(counts)})."


def status_message(statuses: list[SecretStatus], *, app: str | None) -> tuple[str, list[dict[str, Any]]]:
    """Build the `/secret status` reply from statuses already sorted most urgent first."""
    return status_overview_message(StatusOverview.from_statuses(statuses), app=app)


def status_overview_message(overview: StatusOverview, *, app: str | None) -> tuple[str, list[dict[str, Any]]]:
    """Build the `/secret status` reply from the counts per state and the most urgent statuses.

    `overview.statuses` must hold at least STATUS_LINES_MAX statuses, or all of them, for
    the reply to list as many as fit.
    """
    where = f"on {escape(app)}" if app else f"on {overview.apps} app(s)"
    if not overview.total:
        text = (
            f"No secrets in the inventory {'of ' + escape(app) if app else 'yet'}. It is read from Fly at start-up "
            "and on every sync; run `/secret sync` to read it now."
        )
        return text, [section(text)]

    summary = f"*{overview.total} secret(s) {where}*, most urgent first: {_state_counts_text(overview.counts)}."
    # One block for the summary and one for the count of secrets left out.
    line_blocks, shown = pack_lines((status_line(status) for status in overview.statuses),
                                    max_blocks=BLOCKS_PER_MESSAGE - 2, max_chars=MESSAGE_TEXT_BUDGET)
    blocks = [section(summary), *line_blocks]
    if shown < overview.total:
        shown_counts = count_states(overview.statuses[:shown])
        rest = {state: count - shown_counts.get(state, 0) for state, count in overview.counts.items()}
        rest = {state: count for state, count in rest.items() if count}
        narrow = "" if app else " Narrow it with `/secret status --app APP`, or"
        blocks.append(context(f"{_left_out_text(overview.total - shown, rest)}{narrow} run "
                              "`secretbot status` in a terminal for the full table."))
    return truncate(summary.replace("*", ""), TEXT_LIMIT), blocks


def _person(actor: str | None) -> str:
    if actor is None:
        return "secretbot"
    return mention(actor) if _SLACK_USER_ID.match(actor) else escape(actor)


def _detail_text(detail: Mapping[str, Any]) -> str:
    """Render an audit record's detail as `key: value` pairs; nested objects are left out."""
    parts = []
    for key in sorted(detail):
        value = detail[key]
        if value is None or isinstance(value, dict):
            continue
        if isinstance(value, list):
            value = ", ".join(str(item) for item in value[:5]) + (", …" if len(value) > 5 else "")
        parts.append(f"{escape(key)}: {escape(truncate(str(value), 120))}")
    return "; ".join(parts)


def history_line(record: AuditRecord) -> str:
    line = f"`{record.at:%Y-%m-%d %H:%M}` UTC · *{escape(record.event)}* · {_person(record.actor)}"
    if record.run_id:
        line += f" · run `{escape(record.run_id)}`"
    if record.secret and "," in record.secret:
        line += f" · with {escape(record.secret.replace(',', ', '))}"
    detail = _detail_text(record.detail_fields())
    if detail:
        line += f" · {detail}"
    return truncate(line, MAX_LINE_LENGTH)


def history_message(history: SecretHistory) -> tuple[str, list[dict[str, Any]]]:
    """Build the `/secret history` reply: the newest records first, then a count of older ones."""
    title = f"History of {escape(history.name)} on {escape(history.app)}"
    if not history.records:
        text = f"No audit records for {escape(history.name)} on {escape(history.app)}."
        return text, [section(text)]
    line_blocks, shown = pack_lines((history_line(record) for record in history.records),
                                    max_blocks=BLOCKS_PER_MESSAGE - 2, max_chars=MESSAGE_TEXT_BUDGET)
    older = history.older + len(history.records) - shown
    blocks = [section(f"*{title}*, newest first"), *line_blocks]
    if older:
        blocks.append(context(
            f"{older} older record(s) not shown. They are in the audit_log table of the bot's database; "
            "`secretbot audit verify` checks that none was changed."))
    return title, blocks


def recorded_date_reply(status: SecretStatus) -> str:
    return (
        f"Recorded: {escape(status.name)} on {escape(status.app)} was last rotated on "
        f"{_day(status.last_rotated_at or status.first_seen_at)}. It is {status.priority.value} priority "
        f"(every {_days(status.interval_days)}), so it is due {_day(status.due_at)}: *{state_text(status)}*."
    )


def approvers_only_reply(approvers: tuple[str, ...]) -> str:
    who = ", ".join(mention(user) for user in approvers) or "nobody (slack.approvers in secretbot.toml is empty)"
    return f"Only approvers can record a rotation date, because it moves the due date. Approvers: {who}."


def sync_started_ack(apps: Iterable[str]) -> str:
    return f"Reading the secret lists of {', '.join(apps) or 'no apps'} from Fly…"


def sync_reply(results: list[AppSync]) -> str:
    """Describe each app's sync in one line: what it found, or why it failed."""
    if not results:
        return "No Fly app is configured; add app names to fly.apps in secretbot.toml."
    lines = []
    for result in results:
        if result.error is not None:
            lines.append(f":x: {escape(result.app)}: sync failed: {escape(truncate(result.error, 300))}")
            continue
        lines.append(
            f":white_check_mark: {escape(result.app)}: {result.secrets} secret(s), {len(result.appeared)} appeared, "
            f"{len(result.removed)} removed, {len(result.changed_outside)} changed outside secretbot, "
            f"{len(result.staged)} staged"
        )
    return truncate("\n".join(lines), TEXT_LIMIT)


# ----------------------------------------------------------------------------- snooze form

SNOOZE_CALLBACK = "reminder_snooze_form"
SNOOZE_DAYS_BLOCK = "snooze_days"
SNOOZE_DAYS_ACTION = "days"
SNOOZE_REASON_BLOCK = "snooze_reason"
SNOOZE_REASON_ACTION = "reason"


@dataclass(frozen=True)
class SnoozeTarget:
    """The secret a Snooze form is for and the place to confirm it, stored in the modal's private_metadata."""

    app: str
    name: str
    channel: str | None
    thread_ts: str | None

    def to_metadata(self) -> str:
        return json.dumps({"app": self.app, "name": self.name, "channel": self.channel, "thread_ts": self.thread_ts})

    @classmethod
    def from_metadata(cls, text: str) -> SnoozeTarget | None:
        try:
            data = json.loads(text)
            target = cls(app=str(data["app"]), name=str(data["name"]), channel=data.get("channel"),
                         thread_ts=data.get("thread_ts"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return target


def snooze_modal(target: SnoozeTarget, *, max_days: int, reason_required: bool) -> dict[str, Any]:
    intro = (
        f"Leave *{escape(target.name)}* on *{escape(target.app)}* out of the daily reminder for a while. "
        "`/secret status` shows it as snoozed, and the snooze is written to the audit log."
    )
    reason_block: dict[str, Any] = {
        "type": "input",
        "block_id": SNOOZE_REASON_BLOCK,
        "optional": not reason_required,
        "label": {"type": "plain_text", "text": "Reason"},
        "hint": {"type": "plain_text", "text": "Shown in the reminder and in /secret status. Never paste a value."},
        "element": {"type": "plain_text_input", "action_id": SNOOZE_REASON_ACTION, "max_length": MAX_REASON_LENGTH},
    }
    return {
        "type": "modal",
        "callback_id": SNOOZE_CALLBACK,
        "private_metadata": target.to_metadata(),
        "title": {"type": "plain_text", "text": "Snooze reminder"},
        "submit": {"type": "plain_text", "text": "Snooze"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(intro),
            {
                "type": "input",
                "block_id": SNOOZE_DAYS_BLOCK,
                "label": {"type": "plain_text", "text": f"Days (1 to {max_days})"},
                # No max_value, so that a larger number reaches the bot and the error names the cap.
                "element": {"type": "number_input", "action_id": SNOOZE_DAYS_ACTION, "is_decimal_allowed": False,
                            "min_value": "1", "initial_value": str(min(7, max_days))},
            },
            reason_block,
        ],
    }


def _input_value(state_values: Mapping[str, Any], block_id: str, action_id: str) -> str:
    actions = state_values.get(block_id)
    element = actions.get(action_id) if isinstance(actions, dict) else None
    value = element.get("value") if isinstance(element, dict) else None
    return value.strip() if isinstance(value, str) else ""


def _clean_text(text: str) -> str:
    """Drop control and format characters (escape sequences, bidirectional overrides) except line breaks.

    The reason is shown in Slack, stored in the audit log and printed in terminals, where
    such characters would hide or reorder its text.
    """
    kept = (char for char in text if char == "\n" or unicodedata.category(char) not in ("Cc", "Cf"))
    return "".join(kept).strip()


def read_snooze_form(state_values: Mapping[str, Any], *, max_days: int,
                     reason_required: bool) -> tuple[int, str | None] | dict[str, str]:
    """Return (days, reason) from a submitted Snooze form, or the inline errors by block_id."""
    errors: dict[str, str] = {}
    days_text = _input_value(state_values, SNOOZE_DAYS_BLOCK, SNOOZE_DAYS_ACTION)
    days = int(days_text) if days_text.isascii() and days_text.isdigit() else None
    if days is None or not 1 <= days <= max_days:
        errors[SNOOZE_DAYS_BLOCK] = f"Enter a whole number of days from 1 to {max_days}; the cap is {max_days} days."

    reason = _clean_text(_input_value(state_values, SNOOZE_REASON_BLOCK, SNOOZE_REASON_ACTION)) or None
    if reason is None and reason_required:
        errors[SNOOZE_REASON_BLOCK] = "A reason is required for a snooze (reminders.snooze_reason_required)."
    problem = reason_problem(reason) if reason is not None else None
    if problem is not None:
        errors[SNOOZE_REASON_BLOCK] = problem
    if errors or days is None:
        return errors
    return days, reason


def snoozed_reply(user_id: str, target: SnoozeTarget, *, days: int, until: datetime, reason: str | None) -> str:
    why = f" Reason: {escape(reason)}" if reason else ""
    return (
        f":zzz: {mention(user_id)} snoozed the reminder for {escape(target.name)} on {escape(target.app)} "
        f"for {_days(days)}, until {until:%Y-%m-%d %H:%M} UTC.{why}"
    )


# ----------------------------------------------------------------------------- Home tab

HOME_ROTATE_BLOCK_PREFIX = "home_rotate:"


def _run_line(run: OpenRun, permalink: str | None) -> str:
    label = f"<{permalink}|run {run.id}>" if permalink else f"run `{run.id}`"
    status = RUN_STATUS_TEXT.get(run.status, run.status)
    return (f"{label} · {escape(run.kind)} · {escape(run.app)} · {escape(', '.join(run.secret_names))} · "
            f"{status} · requested by {mention(run.requester)}")


def home_view(statuses: list[SecretStatus], runs: list[OpenRun], *, permalinks: Mapping[str, str | None],
              rotate_action_id: str, can_rotate: Callable[[SecretStatus], bool],
              now: datetime, notice: str | None = None) -> dict[str, Any]:
    """Build the Home tab: open runs, overdue secrets with a Rotate button each, then every secret.

    `statuses` are sorted most urgent first. Secrets that `can_rotate` rejects (not in
    secretbot.toml, or on an app no longer configured) are listed without a button.
    """
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Secret rotation"}},
        context(f"{len(statuses)} secret(s): {_counts_text(statuses) or 'none yet'} · "
                f"updated {now:%Y-%m-%d %H:%M} UTC"),
    ]
    if notice:
        blocks.append(section(notice))

    run_lines = [_run_line(run, permalinks.get(run.id)) for run in runs[:MAX_HOME_RUNS]]
    if len(runs) > MAX_HOME_RUNS:
        run_lines.append(f"…and {len(runs) - MAX_HOME_RUNS} more open run(s).")
    blocks.append(section("*Open runs*\n" + ("\n".join(run_lines) if run_lines else "None.")))

    overdue = [status for status in statuses if status.state is State.OVERDUE]
    blocks.append({"type": "divider"})
    blocks.append(section(f"*Overdue* ({len(overdue)})" + ("" if overdue else "\nNothing is overdue.")))
    for index, status in enumerate(overdue[:MAX_HOME_BUTTONS]):
        block = section(status_line(status))
        if can_rotate(status):
            block["block_id"] = f"{HOME_ROTATE_BLOCK_PREFIX}{index}"
            block["accessory"] = {
                "type": "button", "action_id": rotate_action_id, "style": "primary",
                "text": {"type": "plain_text", "text": "Rotate"}, "value": f"{status.app}:{status.name}",
            }
        blocks.append(block)
    if len(overdue) > MAX_HOME_BUTTONS:
        blocks.append(context(f"…and {len(overdue) - MAX_HOME_BUTTONS} more overdue; see the list below."))

    blocks.append({"type": "divider"})
    blocks.append(section("*Every secret*, most urgent first"))
    # One block is kept for the count of secrets left out.
    budget = HOME_BLOCK_LIMIT - len(blocks) - 1
    line_blocks, shown = pack_lines((status_line(status) for status in statuses), max_blocks=budget,
                                    max_chars=HOME_TEXT_BUDGET)
    blocks.extend(line_blocks or [section("No secrets in the inventory yet; run `/secret sync` to read it.")])
    if shown < len(statuses):
        blocks.append(context(f"{_left_out(statuses, shown)} Run `secretbot status` in a terminal for the full table."))
    return {"type": "home", "blocks": blocks}
