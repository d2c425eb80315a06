"""Log set-up: readable lines or one JSON object per line, with the run being worked on.

The runbook engine binds the run, its app, its secrets and the current step with
`run_context` while it executes or settles a step. A `RunContextFilter` on the handler
copies them into every record emitted meanwhile, so a line from a helper that never
receives the run (the flyctl runner, the backup store, a Slack post) still names it.
`asyncio.create_task` copies the current context, so work a step starts in a new task
is tagged too.

Neither format adds anything that could hold a secret value: the message is the one
the code wrote, and an exception is rendered by `logging.Formatter.formatException`,
the standard traceback with exception messages but no local variables. Attributes of an
exception, such as the flyctl output a FlyctlError carries, are not rendered.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from bot.errors import ConfigError
from bot.settings import LOG_FORMATS

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The record attributes that the filter sets. `step` is a dict {"position": …, "kind": …}.
CONTEXT_FIELDS = ("run_id", "app", "secret", "step")

# Attributes every LogRecord has. Anything else on a record came from `extra=` or a filter.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName",
}


@dataclass(frozen=True)
class RunContext:
    """The run a task is working on, as log fields."""

    run_id: str
    app: str
    # Comma-separated secret names, as the audit log writes them.
    secret: str
    step_position: int
    step_kind: str

    def fields(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "app": self.app,
            "secret": self.secret,
            "step": {"position": self.step_position, "kind": self.step_kind},
        }


_current_run: ContextVar[RunContext | None] = ContextVar("secretbot_log_run", default=None)


@contextlib.contextmanager
def run_context(*, run_id: str, app: str, secrets: Sequence[str], step_position: int,
                step_kind: str) -> Iterator[RunContext]:
    """Tag every log line of the current task with this run and step until the block ends."""
    context = RunContext(run_id=run_id, app=app, secret=",".join(secrets), step_position=step_position,
                         step_kind=step_kind)
    token = _current_run.set(context)
    try:
        yield context
    finally:
        _current_run.reset(token)


def current_run() -> RunContext | None:
    """Return the run bound by the innermost `run_context`, or None outside one."""
    return _current_run.get()


class RunContextFilter(logging.Filter):
    """A filter that copies the current run context onto each record and never drops one.

    A field that the record already has (passed with `extra=`) is left as it is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current_run.get()
        if context is not None:
            for name, value in context.fields().items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


def _context_text(record: logging.LogRecord) -> str:
    parts = []
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value is None:
            continue
        if isinstance(value, dict):
            value = f"{value.get('position')}:{value.get('kind')}"
        parts.append(f"{name}={value}")
    return f" [{' '.join(parts)}]" if parts else ""


class TextFormatter(logging.Formatter):
    """The readable format, with the run context in brackets after the message."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # formatMessage renders the line before any traceback, so the context stays on it.
        return super().formatMessage(record) + _context_text(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message and context fields.

    Fields from `extra=` are included when their value is a string, number, boolean or
    None. Other values are left out rather than rendered with str(), which could show
    whatever the object holds.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name in _STANDARD_ATTRIBUTES or name.startswith("_") or name in entry:
                continue
            # `step` is the filter's own dict. Other extras are kept only when they are scalars.
            scalar = value is None or isinstance(value, (str, int, float, bool))
            if scalar or (name == "step" and isinstance(value, dict)):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines inside strings, so a traceback stays on one line.
        return json.dumps(entry, ensure_ascii=False)


def build_handler(log_format: str) -> logging.Handler:
    """Return a stderr handler with the formatter for `log_format` and the run context filter."""
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT {log_format!r} is not a log format; set it to 'text' or 'json'")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RunContextFilter())
    return handler


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send log records at `level` and above to stderr in `log_format` ("text" or "json").

    Python warnings go through logging too, and in the JSON format so does an uncaught
    exception, so that no line on stderr is left unparsed. Like logging.basicConfig, this
    adds no handler when the root logger already has one.
    """
    numeric = logging.getLevelName(level)
    if not isinstance(numeric, int):
        raise ConfigError(f"LOG_LEVEL {level!r} is not a logging level; use DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=numeric, handlers=[build_handler(log_format)])
    logging.captureWarnings(True)
    if log_format == "json":
        sys.excepthook = _log_uncaught
    # aiosqlite and the Slack SDK log request bodies at DEBUG; those can hold message text.
    for noisy in ("aiosqlite", "slack_sdk", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.INFO))
    # slack_sdk's webhook client names the URL it posts to at INFO. A response_url is a
    # credential for its half hour: whoever has it can post in the channel as the bot.
    logging.getLogger("slack_sdk.webhook").setLevel(max(numeric, logging.WARNING))
    # SQLAlchemy logs every statement with its parameters at INFO.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    # Alembic logs its context set-up on every revision check, i.e. every /healthz.
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("secretbot").critical("uncaught exception; the process stops",
                                            exc_info=(kind, error, traceback))
