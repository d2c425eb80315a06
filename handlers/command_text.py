"""Parsing the text of `/secret` into a command, with errors that show the right usage.

Slack sends the text after the command as typed, except that it escapes `&`, `<` and `>`
as HTML entities and may contain smart quotes or no-break spaces from copy and paste.

Error messages quote the user's tokens back, and the reason is stored and posted in the
channel, so neither may carry a secret value. A `NAME=value` token is rejected without
being quoted, quoted tokens pass through the redactor, and a reason in which the redactor
finds key material is rejected.
"""

from __future__ import annotations

import difflib
import html
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.errors import CommandError
from bot.policy import APP_NAME_PATTERN, SECRET_NAME_PATTERN, Policy
from bot.redact import Redactor

ROTATE_USAGE = "/secret rotate NAME [NAME ...] [--app APP] [[--] reason]"
COMPROMISED_USAGE = "/secret compromised NAME [NAME ...] [--app APP] [[--] what happened]"
LOST_USAGE = "/secret lost NAME [NAME ...] [--app APP] [[--] reason]"
ROTATED_USAGE = "/secret rotated NAME YYYY-MM-DD [--app APP]"
STATUS_USAGE = "/secret status [--app APP]"
HISTORY_USAGE = "/secret history NAME [--app APP]"
SYNC_USAGE = "/secret sync [--app APP]"
DIAGNOSE_USAGE = "/secret diagnose NAME [--app APP]"
# The runbook each verb starts, with its usage line.
RUN_USAGES = {"rotate": ROTATE_USAGE, "compromised": COMPROMISED_USAGE, "lost": LOST_USAGE}
ADD_USAGE = "/secret add NAME [--app APP] [[--] reason]"
UNSET_USAGE = "/secret unset NAME [--app APP] [[--] reason]"
# The verbs that put a new secret on an app or remove one, with their usage lines.
CHANGE_USAGES = {"add": ADD_USAGE, "unset": UNSET_USAGE}
USAGES = (
    (
        ROTATE_USAGE,
        "start a rotation of one or more secrets (one approval, one restart); "
        "put `--` before a reason that starts with a word in capitals",
    ),
    (
        COMPROMISED_USAGE,
        "a leaked secret: revoke it at the source, replace it at once (no approval wait) and record the incident",
    ),
    (LOST_USAGE, "a secret nobody can find: restore the bot's backup or regenerate it, then review"),
    (ADD_USAGE, "put a new secret on the app: choose its priority and value, then approval and checks"),
    (UNSET_USAGE, "remove a secret from the app after approval; a Restore button puts its kept backup back"),
    ("/secret cancel RUN_ID [reason]", "stop an open run (the requester or an approver); no step may be running"),
    (STATUS_USAGE, "list every secret, most urgent first: priority, last rotation, age, due date and state"),
    (HISTORY_USAGE, "show the audit trail of one secret, newest first"),
    (ROTATED_USAGE, "record the real date of a secret's last rotation (approvers only, because it moves the due date)"),
    (SYNC_USAGE, "read the list of secrets from Fly now instead of waiting for the next sync"),
    (DIAGNOSE_USAGE, "check one secret on the app (listed, deployed, machines healthy, logs, backup) "
                     "and offer the fix as a button"),
    ("/secret help", "show this help"),
)
CANCEL_USAGE = "/secret cancel RUN_ID [reason]"
_RUN_ID = re.compile(r"^[0-9a-f]{12}\Z")
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
# Older dates are typing mistakes (a year like 0202): Fly.io apps, and the secrets on them, are younger.
EARLIEST_ROTATION_DATE = date(2000, 1, 1)
# Verbs other than the runbooks, for the "Did you mean" hint.
OTHER_VERBS = ("cancel", "status", "history", "rotated", "sync", "help", "diagnose")
# The token that ends the secret names. Every later token except `--app APP` belongs to the reason.
END_OF_NAMES = "--"

# Reasons are stored and shown in Slack; a limit keeps one message within Block Kit's
# 3000-character section text.
MAX_REASON_LENGTH = 500
MAX_SECRETS_PER_RUN = 20

# Tokens that look like an environment variable name: upper case, digits and underscores.
_UPPER_NAME = re.compile(r"^[A-Z][A-Z0-9_]*\Z")
# Phones and word processors turn "--" into one long dash; each becomes "--" again, and a
# longer run of dashes collapses to "--" below.
_DASHES = str.maketrans({"\u2013": "--", "\u2014": "--", "\u2212": "--"})
_DASH_RUN = re.compile(r"(?<!\S)-{3,}")
# With no values registered, it masks what looks like key material: tokens, PEM blocks,
# long base64 and hex runs.
_REDACTOR = Redactor()


@dataclass(frozen=True)
class HelpCommand:
    pass


@dataclass(frozen=True)
class RotateCommand:
    """A command that starts a runbook (`kind` is rotate or compromised) on some secrets."""

    names: tuple[str, ...]
    app: str
    reason: str | None
    kind: str = "rotate"


@dataclass(frozen=True)
class SecretChangeCommand:
    """`/secret add` or `/secret unset` (`kind`): one secret to put on an app or to remove from it."""

    kind: str
    name: str
    app: str
    reason: str | None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,)


@dataclass(frozen=True)
class CancelCommand:
    run_id: str
    reason: str | None


@dataclass(frozen=True)
class RecordDateCommand:
    """`/secret rotated`: the real date on which a secret was last rotated."""

    name: str
    app: str
    rotated_on: date


@dataclass(frozen=True)
class StatusCommand:
    """`/secret status`; `app` None lists every app."""

    app: str | None


@dataclass(frozen=True)
class HistoryCommand:
    name: str
    app: str


@dataclass(frozen=True)
class SyncCommand:
    """`/secret sync`; `app` None syncs every configured app."""

    app: str | None


@dataclass(frozen=True)
class DiagnoseCommand:
    """`/secret diagnose NAME`: the troubleshooting checklist for one secret on one app."""

    name: str
    app: str


Command = (HelpCommand | RotateCommand | CancelCommand | RecordDateCommand | StatusCommand | HistoryCommand
           | SyncCommand | DiagnoseCommand | SecretChangeCommand)


def help_text() -> str:
    lines = ["*secretbot commands*"]
    lines += [f"`{usage}`: {what}" for usage, what in USAGES]
    return "\n".join(lines)


def normalize(text: str) -> str:
    """Undo Slack's HTML escaping and fold the characters that copy and paste introduces."""
    text = html.unescape(text)
    text = unicodedata.normalize("NFKC", text)
    text = _DASH_RUN.sub("--", text.translate(_DASHES))
    # Directional marks are invisible, so they cannot be part of a name a person meant to type.
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def parse_command(text: str, policy: Policy, *, today: date | None = None) -> Command:
    """Parse the text after `/secret`; raise CommandError with usage on any mistake.

    `today` is the latest date `/secret rotated` accepts; by default the later of today in
    UTC and today in the reminder time zone. rotate, compromised and lost accept the names
    in secretbot.toml and those in `policy.added` for the app. Parsing does no I/O, so the
    caller loads `policy.added` first.
    """
    tokens = normalize(text).split()
    if not tokens or tokens[0].lower() in ("help", "-h", "--help"):
        return HelpCommand()
    verb = tokens[0].lower()
    if verb == "cancel":
        # Parsed before the check for values, whose error shows the usage of rotate, so that
        # a malformed cancel (a bad run ID above all) is reported with cancel's usage.
        return _parse_cancel(tokens[1:])
    _reject_values(tokens, policy)
    if verb in RUN_USAGES:
        return _parse_rotate(tokens[1:], policy, kind=verb)
    if verb in CHANGE_USAGES:
        return _parse_change(tokens[1:], policy, kind=verb)
    if verb == "cancel":
        return _parse_cancel(tokens[1:])
    if verb == "rotated":
        return _parse_record_date(tokens[1:], policy, today=today or latest_rotation_date(policy))
    if verb in ("status", "sync"):
        usage = STATUS_USAGE if verb == "status" else SYNC_USAGE
        app, rest = _take_optional_app(tokens[1:], policy, usage)
        if rest:
            raise _usage_error(f"Unexpected `{_shown(rest[0])}`; the only option is `--app APP`.", usage)
        return StatusCommand(app=app) if verb == "status" else SyncCommand(app=app)
    if verb == "history":
        return _parse_history(tokens[1:], policy)
    if verb == "diagnose":
        return _parse_diagnose(tokens[1:], policy)
    suggestion = _close(verb, [*RUN_USAGES, *CHANGE_USAGES, *OTHER_VERBS])
    hint = f" Did you mean `{suggestion}`?" if suggestion else ""
    raise CommandError(f"Unknown command `{_shown(tokens[0])}`.{hint}\n{help_text()}")


def _parse_rotate(tokens: list[str], policy: Policy, *, kind: str = "rotate") -> RotateCommand:
    usage = RUN_USAGES[kind]
    app, rest = _take_app_flag(tokens, policy, usage)
    names: list[str] = []
    reason_tokens: list[str] = []
    names_ended = False
    for token in rest:
        if reason_tokens or names_ended:
            reason_tokens.append(token)
            continue
        if token == END_OF_NAMES:
            names_ended = True
            continue
        if policy.secret_for(app, token) is not None:
            if token not in names:
                names.append(token)
            continue
        if token.startswith("-"):
            # Only the part before "=" is quoted, in case a value follows it.
            option = token.split("=", 1)[0]
            raise _usage_error(f"Unknown option `{_shown(option)}`; the only option is `--app APP`.", usage)
        if not names or _looks_like_name(token, policy):
            raise _unknown_secret(token, policy, after_names=bool(names), usage=usage)
        reason_tokens.append(token)

    if not names:
        raise _usage_error("Name at least one secret.", usage)
    for name in list(names):
        # A key ID and its key change together, in one flyctl call and one restart.
        secret = policy.secret_for(app, name)
        partner = secret.paired_with if secret is not None else None
        if partner is not None and partner not in names:
            names.append(partner)
    if len(names) > MAX_SECRETS_PER_RUN:
        raise _usage_error(f"At most {MAX_SECRETS_PER_RUN} secrets can be rotated in one run, got {len(names)}.", usage)
    reason = " ".join(reason_tokens) or None
    if reason is not None and len(reason) > MAX_REASON_LENGTH:
        raise _usage_error(f"The reason is {len(reason)} characters long; keep it under {MAX_REASON_LENGTH}.", usage)
    if reason is not None and _REDACTOR.redact(reason) != reason:
        raise _usage_error("The reason looks like it contains a key or token; leave values out of the reason.", usage)
    return RotateCommand(names=tuple(names), app=app, reason=reason, kind=kind)


def _parse_change(tokens: list[str], policy: Policy, *, kind: str) -> SecretChangeCommand:
    """Parse `NAME [--app APP] [[--] reason]` after `add` or `unset`; the name need not be in secretbot.toml."""
    usage = CHANGE_USAGES[kind]
    app, rest = _take_app_flag(tokens, policy, usage)
    if not rest or rest[0] == END_OF_NAMES:
        raise _usage_error("Name the secret to add." if kind == "add" else "Name the secret to remove.", usage)
    name, reason_tokens = rest[0], rest[1:]
    if name.startswith("-"):
        option = name.split("=", 1)[0]
        raise _usage_error(f"Unknown option `{_shown(option)}`; the only option is `--app APP`.", usage)
    if not SECRET_NAME_PATTERN.match(name):
        raise _usage_error(
            f"`{_shown(name)}` is not a valid secret name; names are letters, digits and underscores, "
            "and do not start with a digit.", usage)
    if name != name.upper() and _REDACTOR.redact(name) != name:
        # The name becomes the run's headline in the channel, so a pasted key must not pass
        # for one. Long upper-case names are left alone: keys mix cases.
        raise _usage_error("That looks like a key or token rather than a secret name; name the secret, "
                           "never its value.", usage)

    if reason_tokens and reason_tokens[0] == END_OF_NAMES:
        reason_tokens = reason_tokens[1:]
    elif reason_tokens and reason_tokens[0].startswith("-"):
        option = reason_tokens[0].split("=", 1)[0]
        raise _usage_error(f"Unknown option `{_shown(option)}`; the only option is `--app APP`.", usage)
    elif reason_tokens and _looks_like_name(reason_tokens[0], policy):
        raise _usage_error(
            f"`/secret {kind}` takes one secret name, and `{_shown(reason_tokens[0])}` looks like a second one. "
            f"If the reason starts here, put `{END_OF_NAMES}` before it.", usage)
    reason = " ".join(reason_tokens) or None
    problem = reason_problem(reason) if reason is not None else None
    if problem is not None:
        raise _usage_error(problem, usage)
    return SecretChangeCommand(kind=kind, name=name, app=app, reason=reason)


def _parse_cancel(tokens: list[str]) -> CancelCommand:
    if not tokens:
        raise _usage_error("Name the run to cancel: its ID is the 12-character code in the run's message.",
                           CANCEL_USAGE)
    run_id, reason_tokens = tokens[0], tokens[1:]
    if not _RUN_ID.match(run_id.lower()):
        # A token with "=" may be a pasted NAME=value, so it is not quoted back.
        subject = "The word after `cancel`" if "=" in run_id else f"`{_shown(run_id)}`"
        raise _usage_error(f"{subject} is not a run ID: a run ID is the 12-character code of digits and letters "
                           "a to f in the run's message.", CANCEL_USAGE)
    if any("=" in token for token in reason_tokens):
        raise _usage_error("Values are never typed in Slack; leave `NAME=value` out of the reason.", CANCEL_USAGE)
    reason = " ".join(reason_tokens) or None
    problem = reason_problem(reason) if reason is not None else None
    if problem is not None:
        raise _usage_error(problem, CANCEL_USAGE)
    return CancelCommand(run_id=run_id.lower(), reason=reason)


def rotate_target(app: str, name: str, policy: Policy) -> RotateCommand:
    """Check a button's app and secret as `/secret rotate NAME --app APP` would; raise CommandError if invalid.

    A paired secret is added as the command adds it.
    """
    if not SECRET_NAME_PATTERN.match(name):
        raise _usage_error(f"`{_shown(name)}` is not a valid secret name.", ROTATE_USAGE)
    if policy.secret_for(app, name) is None:
        raise CommandError(
            f"{name} is not in secretbot.toml, so there is no runbook for it; add it under [secrets] "
            f"to rotate it with secretbot.")
    return _parse_rotate([name, "--app", app], policy)


def reason_problem(reason: str) -> str | None:
    """Return why a free-text reason cannot be stored and shown, or None if it can."""
    if len(reason) > MAX_REASON_LENGTH:
        return f"The reason is {len(reason)} characters long; keep it under {MAX_REASON_LENGTH}."
    if _REDACTOR.redact(reason) != reason:
        return "The reason looks like it contains a key or token; leave values out of the reason."
    return None


def latest_rotation_date(policy: Policy, now: datetime | None = None) -> date:
    """Return the latest date `/secret rotated` accepts: today in UTC or in the reminder time zone."""
    now = now or datetime.now(UTC)
    try:
        local = now.astimezone(ZoneInfo(policy.reminders.timezone)).date()
    except (ZoneInfoNotFoundError, ValueError):
        local = now.date()
    return max(now.date(), local)


def _parse_record_date(tokens: list[str], policy: Policy, *, today: date) -> RecordDateCommand:
    app, rest = _take_app_flag(tokens, policy, ROTATED_USAGE)
    for token in rest:
        if token.startswith("-"):
            option = token.split("=", 1)[0]
            raise _usage_error(f"Unknown option `{_shown(option)}`; the only option is `--app APP`.", ROTATED_USAGE)
    if len(rest) < 2:
        raise _usage_error("Name the secret and the date of its last rotation.", ROTATED_USAGE)
    if len(rest) > 2:
        raise _usage_error(f"Unexpected `{_shown(rest[2])}`; give only the secret name and the date.",
                           ROTATED_USAGE)
    name, when = rest
    if _ISO_DATE.match(name) and not _ISO_DATE.match(when):
        raise _usage_error("Put the secret name before the date.", ROTATED_USAGE)
    if not SECRET_NAME_PATTERN.match(name):
        raise _usage_error(
            f"`{_shown(name)}` is not a valid secret name; names are letters, digits and underscores.",
            ROTATED_USAGE)
    if not _ISO_DATE.match(when):
        raise _usage_error(f"`{_shown(when)}` is not a date; write it as YYYY-MM-DD, e.g. 2025-01-31.",
                           ROTATED_USAGE)
    try:
        rotated_on = date.fromisoformat(when)
    except ValueError:
        raise _usage_error(f"`{_shown(when)}` is not a valid calendar date.", ROTATED_USAGE) from None
    if rotated_on > today:
        raise _usage_error(
            f"{rotated_on.isoformat()} is in the future; give the date on which the secret was last rotated.",
            ROTATED_USAGE)
    if rotated_on < EARLIEST_ROTATION_DATE:
        raise _usage_error(
            f"{rotated_on.isoformat()} is before {EARLIEST_ROTATION_DATE.isoformat()}, which is not a plausible "
            "rotation date; check the year.", ROTATED_USAGE)
    return RecordDateCommand(name=name, app=app, rotated_on=rotated_on)


def _parse_history(tokens: list[str], policy: Policy) -> HistoryCommand:
    app, rest = _take_app_flag(tokens, policy, HISTORY_USAGE)
    if not rest:
        raise _usage_error("Name the secret whose history to show.", HISTORY_USAGE)
    name = rest[0]
    if name.startswith("-"):
        option = name.split("=", 1)[0]
        raise _usage_error(f"Unknown option `{_shown(option)}`; the only option is `--app APP`.", HISTORY_USAGE)
    if not SECRET_NAME_PATTERN.match(name):
        raise _usage_error(
            f"`{_shown(name)}` is not a valid secret name; names are letters, digits and underscores.",
            HISTORY_USAGE)
    if len(rest) > 1:
        raise _usage_error(f"Unexpected `{_shown(rest[1])}`; name one secret.", HISTORY_USAGE)
    return HistoryCommand(name=name, app=app)


def _parse_diagnose(tokens: list[str], policy: Policy) -> DiagnoseCommand:
    app, rest = _take_app_flag(tokens, policy, DIAGNOSE_USAGE)
    if not rest:
        raise _usage_error("Name the secret to diagnose.", DIAGNOSE_USAGE)
    name = rest[0]
    if name.startswith("-"):
        option = name.split("=", 1)[0]
        raise _usage_error(f"Unknown option `{_shown(option)}`; the only option is `--app APP`.", DIAGNOSE_USAGE)
    if not SECRET_NAME_PATTERN.match(name):
        raise _usage_error(
            f"`{_shown(name)}` is not a valid secret name; names are letters, digits and underscores.",
            DIAGNOSE_USAGE)
    if len(rest) > 1:
        raise _usage_error(f"Unexpected `{_shown(rest[1])}`; name one secret.", DIAGNOSE_USAGE)
    return DiagnoseCommand(name=name, app=app)


def unknown_secret_error(name: str, known: list[str], *, app: str, usage: str) -> CommandError:
    """Return the error for a secret that is neither in secretbot.toml nor on the app, with the closest name."""
    message = f"Unknown secret `{_shown(name)}` on {app}."
    same_letters = [candidate for candidate in known if candidate.lower() == name.lower()]
    suggestion = same_letters[0] if same_letters else _close(name, known)
    if suggestion:
        message += f" Did you mean `{suggestion}`?"
        if same_letters:
            message += " Secret names are case-sensitive."
    return _usage_error(message, usage)


def _reject_values(tokens: list[str], policy: Policy) -> None:
    """Raise CommandError, quoting nothing, if a token looks like `NAME=value`.

    Options are left to the option parser, which quotes them only up to the "=".
    """
    for token in tokens:
        if token.startswith("--app="):
            token = token[len("--app="):]
        elif token.startswith("-"):
            continue
        if "=" not in token:
            continue
        name = token.split("=", 1)[0]
        example = name if name in policy.secrets else "NAME"
        verb = tokens[0].lower()
        if verb in CHANGE_USAGES:
            raise _usage_error(
                f"Values are never typed in Slack. Name only the secret, e.g. `/secret {verb} {example}`; "
                "a value is entered in a form that only you see, or generated by the bot.", CHANGE_USAGES[verb])
        raise _usage_error(
            f"Values are never typed in Slack. Name only the secret, e.g. `/secret rotate {example}`; "
            "the bot makes or asks for the new value."
        )


def _take_app_flag(tokens: list[str], policy: Policy, usage: str = ROTATE_USAGE) -> tuple[str, list[str]]:
    app, rest = _split_app_flag(tokens, usage)
    return _resolve_app(app, policy, usage), rest


def _take_optional_app(tokens: list[str], policy: Policy, usage: str) -> tuple[str | None, list[str]]:
    """Like `_take_app_flag`, but without `--app` the result is None (every app) instead of the first one."""
    app, rest = _split_app_flag(tokens, usage)
    return (None if app is None else _resolve_app(app, policy, usage)), rest


def _split_app_flag(tokens: list[str], usage: str) -> tuple[str | None, list[str]]:
    app: str | None = None
    rest: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token == "--app" or token.startswith("--app="):
            if app is not None:
                raise _usage_error("`--app` is given twice.", usage)
            if token == "--app":
                if index + 1 >= len(tokens):
                    raise _usage_error("`--app` needs an app name.", usage)
                app = tokens[index + 1]
                index += 2
            else:
                app = token.split("=", 1)[1]
                index += 1
            continue
        rest.append(token)
        index += 1
    return app, rest


def _resolve_app(app: str | None, policy: Policy, usage: str = ROTATE_USAGE) -> str:
    configured = policy.fly.apps
    if app is None:
        if not configured:
            raise CommandError("No Fly app is configured; add app names to fly.apps in secretbot.toml.")
        return configured[0]
    if app in configured:
        return app
    if not APP_NAME_PATTERN.match(app):
        reason = f"`{_shown(app)}` is not a valid Fly app name."
    else:
        reason = f"Unknown app `{_shown(app)}`."
    suggestion = _close(app, list(configured))
    if suggestion:
        reason += f" Did you mean `{suggestion}`?"
    reason += f" Configured apps: {', '.join(f'`{name}`' for name in configured) or 'none'}."
    raise _usage_error(reason, usage)


def _looks_like_name(token: str, policy: Policy) -> bool:
    if _UPPER_NAME.match(token) and len(token) > 1:
        return True
    return token.lower() in policy.lowercase_names


def _unknown_secret(token: str, policy: Policy, *, after_names: bool, usage: str = ROTATE_USAGE) -> CommandError:
    if not SECRET_NAME_PATTERN.match(token):
        message = f"`{_shown(token)}` is not a valid secret name; names are letters, digits and underscores."
    else:
        message = f"Unknown secret `{_shown(token)}`."
    same_letters = [name for name in policy.secrets if name.lower() == token.lower()]
    suggestion = same_letters[0] if same_letters else _close(token, list(policy.secrets))
    if suggestion:
        message += f" Did you mean `{suggestion}`?"
        if same_letters:
            message += " Secret names are case-sensitive."
    if after_names:
        message += f" If the reason starts here, put `{END_OF_NAMES}` before it."
    return _usage_error(message, usage)


def _usage_error(message: str, usage: str = ROTATE_USAGE) -> CommandError:
    return CommandError(f"{message}\nUsage: `{usage}`")


def _close(word: str, candidates: list[str]) -> str | None:
    by_upper = {candidate.upper(): candidate for candidate in candidates}
    matches = difflib.get_close_matches(word.upper(), list(by_upper), n=1, cutoff=0.6)
    return by_upper[matches[0]] if matches else None


def _shown(token: str) -> str:
    """Quote user input inside a Slack code span, redacted, shortened and escaped.

    The whole token is redacted before it is shortened, so a key cut short is still masked.
    Escaping `<`, `>` and `&` keeps text like `<!channel>` from becoming a mention.
    """
    cleaned = _REDACTOR.redact(token).replace("`", "'")
    cleaned = cleaned if len(cleaned) <= 60 else cleaned[:57] + "..."
    return cleaned.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
