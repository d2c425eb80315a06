"""Every Slack message of the daily reminder, and its text rendering for `secretbot remind --dry-run`.

Button scheme, read by the listener that handles the clicks: every listed secret gets an
actions block with two buttons whose action_ids are fixed, `reminder_rotate` and
`reminder_snooze` (ROTATE_ACTION_ID and SNOOZE_ACTION_ID). Slack only requires action_ids
to be unique within a block, so each line's actions block has its own block_id,
`reminder:<local date>:<line number>`. Both buttons carry the value `"<app>:<name>"`
(see button_value and parse_button_value). App and secret names cannot contain ':'.

Limits: at most 50 blocks per message, 3000 characters per section, 150 per header. A
reminder that does not fit is split into a parent message and thread replies. Only the
MAX_BUTTON_LINES most urgent secrets get buttons; the others are listed as compact text
lines with a pointer to `/secret status`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.inventory.schedule import SecretStatus
from bot.reminders.report import Reminder, group_by_app
from handlers.messages import (
    BLOCKS_PER_MESSAGE,
    HEADER_LIMIT,
    SECTION_LIMIT,
    TEXT_LIMIT,
    escape,
    mention,
    truncate,
)

ROTATE_ACTION_ID = "reminder_rotate"
SNOOZE_ACTION_ID = "reminder_snooze"
BLOCK_ID_PREFIX = "reminder:"

# The maximum number of secrets, most urgent first, that get Rotate now and Snooze
# buttons. Each takes two blocks, so 100 lines take about five messages.
MAX_BUTTON_LINES = 100
# The maximum number of compact lines (secrets without buttons). Any beyond are only counted.
MAX_COMPACT_LINES = 1000
MAX_SNOOZED_LINES = 50
# NOTE: Slack rejects a message whose blocks are too long (msg_blocks_too_long) without
# publishing the limit; this per-message budget is a guess. A rejected message is posted
# again as plain text, so a wrong guess costs the buttons, not the reminder.
MESSAGE_TEXT_BUDGET = 12_000

OVERDUE_ICON = ":rotating_light:"
DUE_SOON_ICON = ":hourglass_flowing_sand:"
SNOOZED_ICON = ":zzz:"
ALL_CLEAR_ICON = ":white_check_mark:"
AUTOMATIC_ICON = ":robot_face:"


@dataclass(frozen=True)
class ReminderMessage:
    """One Slack message of a reminder: the parent first, then thread replies."""

    # The notification and fallback text sent with the blocks.
    text: str
    blocks: list[dict[str, Any]]
    # The plain text posted instead when Slack rejects the blocks (invalid_blocks, msg_blocks_too_long).
    plain_text: str


def button_value(app: str, name: str) -> str:
    return f"{app}:{name}"


def parse_button_value(value: str) -> tuple[str, str] | None:
    """Return (app, name) from a reminder button's value, or None when it is malformed."""
    app, separator, name = value.partition(":")
    if not separator or not app or not name or ":" in name:
        return None
    return app, name


def reminder_messages(reminder: Reminder) -> list[ReminderMessage]:
    """Build the messages of one reminder: a parent message and, when it does not fit, thread replies."""
    pages = _Pages()
    pages.add([_header(reminder), _section(_intro(reminder))])

    ranked = reminder.ranked()
    with_buttons = {(status.app, status.name) for status in ranked[:MAX_BUTTON_LINES]}
    line_number = 0
    for overdue, secrets in ((True, reminder.overdue), (False, reminder.due_soon)):
        for group in group_by_app(status for status in secrets if (status.app, status.name) in with_buttons):
            heading = _section(_group_title(reminder, group.app, overdue=overdue))
            for status in group.secrets:
                line_number += 1
                pages.add(_line_blocks(reminder, status, line_number), heading=heading)

    if reminder.automatic:
        for block in _automatic_blocks(reminder.automatic):
            pages.add([block])
    rest = [status for status in ranked if (status.app, status.name) not in with_buttons]
    if rest:
        for block in _compact_blocks(rest):
            pages.add([block])
    if reminder.snoozed:
        for block in _snoozed_blocks(reminder.snoozed):
            pages.add([block])
    return pages.messages(reminder)


def _header(reminder: Reminder) -> dict[str, Any]:
    text = f"Secret rotation reminder for {reminder.local_date:%Y-%m-%d}"
    return {"type": "header", "text": {"type": "plain_text", "text": truncate(text, HEADER_LIMIT)}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION_LIMIT)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, SECTION_LIMIT)}]}


def summary_text(reminder: Reminder) -> str:
    """Describe the counts in one line, for notifications and the parent message's fallback text."""
    opened = f" Rotation runs opened automatically: {len(reminder.automatic)}." if reminder.automatic else ""
    if reminder.nothing_due:
        return f"Nothing is overdue or due within {_days(reminder.window_days)}.{opened}"
    return f"Secrets to rotate: {_counts(reminder)}.{opened}"


def _counts(reminder: Reminder) -> str:
    parts = []
    if reminder.overdue:
        parts.append(f"{len(reminder.overdue)} overdue")
    if reminder.due_soon:
        parts.append(f"{len(reminder.due_soon)} due within {_days(reminder.window_days)}")
    return " and ".join(parts)


def _intro(reminder: Reminder) -> str:
    if reminder.nothing_due:
        return f"{ALL_CLEAR_ICON} {summary_text(reminder)}"
    apps = len({status.app for status in reminder.ranked()})
    lines = [f"*{_counts(reminder)}* across {apps} app{'s' if apps != 1 else ''}."]
    lines.append("*Rotate now* starts the rotation runbook with you as the requester. *Snooze* leaves a "
                 "secret out of this reminder for the days you choose. `/secret status` lists every secret.")
    if reminder.items > MAX_BUTTON_LINES:
        lines.append(f"The {MAX_BUTTON_LINES} most urgent have buttons; the other "
                     f"{reminder.items - MAX_BUTTON_LINES} are listed in short form after them.")
    return "\n".join(lines)


def _group_title(reminder: Reminder, app: str, *, overdue: bool) -> str:
    if overdue:
        return f"{OVERDUE_ICON} *Overdue in {escape(app)}*"
    return f"{DUE_SOON_ICON} *Due within {_days(reminder.window_days)} in {escape(app)}*"


def _days(count: int) -> str:
    return f"{count} day{'s' if count != 1 else ''}"


def due_phrase(status: SecretStatus) -> str:
    """Describe how overdue a secret is, or when it falls due."""
    if status.is_overdue:
        if status.overdue_days == 0:
            return "due today"
        return f"{_days(status.overdue_days)} overdue"
    if status.days_until_due == 0:
        return "due within a day"
    return f"due in {_days(status.days_until_due)}"


def _line_text(status: SecretStatus) -> str:
    due = due_phrase(status)
    emphasis = f"*{due}*" if status.is_overdue else due
    text = f"`{escape(status.name)}` · {emphasis} · {status.priority.value} priority"
    if status.staged:
        text += " · a new value is staged but not deployed"
    return text


def _line_blocks(reminder: Reminder, status: SecretStatus, line_number: int) -> list[dict[str, Any]]:
    value = button_value(status.app, status.name)
    elements: list[dict[str, Any]] = []
    text = _line_text(status)
    if status.rotatable:
        elements.append({"type": "button", "action_id": ROTATE_ACTION_ID, "style": "primary", "value": value,
                         "text": {"type": "plain_text", "text": "Rotate now"}})
    else:
        # The rotation runbook needs to know how the value is made, so it cannot start.
        missing = [] if status.known_secret else [f"a `[secrets.{status.name}]` table"]
        missing += [] if status.known_app else [f"`{status.app}` to `fly.apps`"]
        text += f"\n_To rotate it from Slack, add {' and '.join(missing)} in secretbot.toml._"
    elements.append({"type": "button", "action_id": SNOOZE_ACTION_ID, "value": value,
                     "text": {"type": "plain_text", "text": "Snooze"}})
    buttons = {
        "type": "actions",
        "block_id": f"{BLOCK_ID_PREFIX}{reminder.local_date:%Y-%m-%d}:{line_number}",
        "elements": elements,
    }
    return [_section(text), buttons]


def _compact_blocks(rest: list[SecretStatus]) -> list[dict[str, Any]]:
    """List secrets without buttons as text lines grouped by app, a few thousand characters per section."""
    listed = rest[:MAX_COMPACT_LINES]
    lines = [f"*Also due, without buttons ({len(rest)}, most urgent first):*"]
    for group in group_by_app(listed):
        lines.append(f"*{escape(group.app)}*")
        lines.extend(f"• {_line_text(status)}" for status in group.secrets)
    if len(rest) > len(listed):
        lines.append(f"…and {len(rest) - len(listed)} more. `/secret status` lists every secret.")
    return [_section(text) for text in _chunk_lines(lines, SECTION_LIMIT)]


def _automatic_blocks(automatic: tuple[SecretStatus, ...]) -> list[dict[str, Any]]:
    """List the rotations the bot opened itself: each waits for approval in its own thread."""
    lines = [f"{AUTOMATIC_ICON} *Rotation runs opened automatically ({len(automatic)}):* `auto_rotate` is set for "
             "these secrets, so the bot opened the run when they fell due. Each waits for an approver in its thread."]
    lines.extend(f"• `{escape(status.name)}` on {escape(status.app)} ({due_phrase(status)}): run "
                 f"`{status.open_run_id}` opened" for status in automatic[:MAX_SNOOZED_LINES])
    if len(automatic) > MAX_SNOOZED_LINES:
        lines.append(f"…and {len(automatic) - MAX_SNOOZED_LINES} more.")
    return [_section(text) for text in _chunk_lines(lines, SECTION_LIMIT)]


def _snoozed_line(status: SecretStatus) -> str:
    by = f" by {mention(status.snoozed_by)}" if status.snoozed_by else ""
    until = f" until {status.snoozed_until:%Y-%m-%d %H:%M} UTC" if status.snoozed_until else ""
    reason = f": {escape(truncate(status.snooze_reason, 300))}" if status.snooze_reason else ""
    return f"• `{escape(status.name)}` on {escape(status.app)} ({due_phrase(status)}), snoozed{by}{until}{reason}"


def _snoozed_blocks(snoozed: tuple[SecretStatus, ...]) -> list[dict[str, Any]]:
    lines = [f"{SNOOZED_ICON} *Snoozed ({len(snoozed)}):*"]
    lines.extend(_snoozed_line(status) for status in snoozed[:MAX_SNOOZED_LINES])
    if len(snoozed) > MAX_SNOOZED_LINES:
        lines.append(f"…and {len(snoozed) - MAX_SNOOZED_LINES} more.")
    return [_context(text) for text in _chunk_lines(lines, SECTION_LIMIT)]


def _chunk_lines(lines: Iterable[str], limit: int) -> list[str]:
    """Join lines into texts of at most `limit` characters, never splitting a line."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        line = truncate(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            chunks.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        chunks.append(current)
    return chunks


def _block_text(block: dict[str, Any]) -> str:
    """Return the visible text of a header, section or context block, or "" for buttons."""
    if block.get("type") in ("header", "section"):
        return str(block.get("text", {}).get("text", ""))
    if block.get("type") == "context":
        return "\n".join(str(element.get("text", "")) for element in block.get("elements", []))
    return ""


class _Pages:
    """Packs blocks into messages within the block and text budgets.

    A continuation page starts with a context line, filled in once the page count is
    known, and repeats the heading of the group it continues.
    """

    def __init__(self) -> None:
        self.pages: list[list[dict[str, Any]]] = [[]]
        self.sizes: list[int] = [0]
        self.heading: dict[str, Any] | None = None

    def add(self, blocks: list[dict[str, Any]], *, heading: dict[str, Any] | None = None) -> None:
        """Add blocks that stay together, after `heading` when it differs from the current one."""
        new_group = heading is not None and heading != self.heading
        needed = ([heading] if new_group and heading is not None else []) + blocks
        if not self._fits(needed):
            # The context line is a placeholder until the number of pages is known.
            self.pages.append([_context("-")])
            self.sizes.append(0)
            if heading is not None and not new_group:
                needed = [_continued(heading)] + blocks
        self.pages[-1].extend(needed)
        self.sizes[-1] += sum(len(_block_text(block)) for block in needed)
        self.heading = heading

    def _fits(self, blocks: list[dict[str, Any]]) -> bool:
        if not self.pages[-1]:
            return True
        size = sum(len(_block_text(block)) for block in blocks)
        return (len(self.pages[-1]) + len(blocks) <= BLOCKS_PER_MESSAGE
                and self.sizes[-1] + size <= MESSAGE_TEXT_BUDGET)

    def messages(self, reminder: Reminder) -> list[ReminderMessage]:
        total = len(self.pages)
        result: list[ReminderMessage] = []
        for number, blocks in enumerate(self.pages, start=1):
            if number == 1:
                text = summary_text(reminder)
            else:
                text = f"Secret rotation reminder for {reminder.local_date:%Y-%m-%d}, part {number} of {total}"
                blocks[0] = _context(text)
            plain = "\n".join(filter(None, (_block_text(block) for block in blocks)))
            result.append(ReminderMessage(text=truncate(text, TEXT_LIMIT), blocks=blocks,
                                          plain_text=truncate(plain, TEXT_LIMIT)))
        return result


def _continued(heading: dict[str, Any]) -> dict[str, Any]:
    return _section(_block_text(heading) + " (continued)")


def reminder_text(reminder: Reminder, *, channel: str) -> str:
    """Render the whole reminder as plain text for the terminal, every secret included."""
    lines = [f"Secret rotation reminder for {reminder.local_date:%Y-%m-%d} in channel {channel}"]
    if not reminder.should_post:
        lines.append(f"{summary_text(reminder)} Nothing would be posted (reminders.all_clear is off).")
    else:
        lines.append(summary_text(reminder))
    sections: list[tuple[str, tuple[SecretStatus, ...]]] = [
        ("Overdue", reminder.overdue), (f"Due within {_days(reminder.window_days)}", reminder.due_soon)]
    for title, secrets in sections:
        if not secrets:
            continue
        lines.append(f"{title}:")
        for group in group_by_app(secrets):
            lines.append(f"  {group.app}")
            lines.extend(f"    {_plain_line(status)}" for status in group.secrets)
    if reminder.automatic:
        lines.append("Rotation runs opened automatically:")
        lines.extend(f"  {status.name} on {status.app} ({due_phrase(status)}): run {status.open_run_id} opened"
                     for status in reminder.automatic)
    if reminder.snoozed:
        lines.append("Snoozed:")
        lines.extend(f"  {_plain_snoozed(status)}" for status in reminder.snoozed)
    return "\n".join(lines)


def _plain_line(status: SecretStatus) -> str:
    text = f"{status.name}: {due_phrase(status)}, {status.priority.value} priority"
    return text + (", a new value is staged but not deployed" if status.staged else "")


def _plain_snoozed(status: SecretStatus) -> str:
    until = f" until {status.snoozed_until:%Y-%m-%d %H:%M} UTC" if status.snoozed_until else ""
    by = f" by {status.snoozed_by}" if status.snoozed_by else ""
    reason = f": {status.snooze_reason}" if status.snooze_reason else ""
    return f"{status.name} on {status.app} ({due_phrase(status)}), snoozed{by}{until}{reason}"

