"""The daily rotation reminder: when it is due, who posts it, and what it lists."""

from bot.reminders.ledger import ReminderLedger
from bot.reminders.report import Reminder, build_reminder
from bot.reminders.scheduler import (
    PostedReminder,
    ReminderPoster,
    ReminderPostError,
    ReminderScheduler,
    SendResult,
)

__all__ = [
    "PostedReminder",
    "Reminder",
    "ReminderLedger",
    "ReminderPostError",
    "ReminderPoster",
    "ReminderScheduler",
    "SendResult",
    "build_reminder",
]
