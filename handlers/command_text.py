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

from bot.errors import CommandError
from bot.policy import APP_NAME_PATTERN, SECRET_NAME_PATTERN, Policy
from bot.redact import Redactor

ROTATE_USAGE = "/secret rotate NAME [NAME ...] [--app APP] [[--] reason]"
COMPROMISED_USAGE = "/secret compromised NAME [NAME ...] [--app APP] [[--] what happened]"
LOST_USAGE = "/secret lost NAME [NAME ...] [--app APP] [[--] reason]"
# The runbook each verb starts, with its usage line.
RUN_USAGES = {"rotate": ROTATE_USAGE, "compromised": COMPROMISED_USAGE, "lost": LOST_USAGE}
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
    ("/secret cancel RUN_ID [reason]", "stop an open run (the requester or an approver); no step may be running"),
    ("/secret help", "show this help"),
)
CANCEL_USAGE = "/secret cancel RUN_ID [reason]"
_RUN_ID = re.compile(r"^[0-9a-f]{12}\Z")
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
class CancelCommand:
    run_id: str
    reason: str | None


Command = HelpCommand | RotateCommand | CancelCommand


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


def parse_command(text: str, policy: Policy) -> Command:
    """Parse the text after `/secret`; raise CommandError with usage on any mistake."""
    tokens = normalize(text).split()
    if not tokens or tokens[0].lower() in ("help", "-h", "--help"):
        return HelpCommand()
    _reject_values(tokens, policy)
    verb = tokens[0].lower()
    if verb in RUN_USAGES:
        return _parse_rotate(tokens[1:], policy, kind=verb)
    if verb == "cancel":
        return _parse_cancel(tokens[1:])
    suggestion = _close(verb, [*RUN_USAGES, "cancel", "help"])
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
        if token in policy.secrets:
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
        partner = policy.secrets[name].paired_with
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


def _parse_cancel(tokens: list[str]) -> CancelCommand:
    if not tokens or not _RUN_ID.match(tokens[0].lower()):
        shown = f" `{_shown(tokens[0])}` is not one." if tokens else ""
        raise _usage_error(f"Name the run to cancel: its ID is the 12-character code in the run's message.{shown}",
                           CANCEL_USAGE)
    reason = " ".join(tokens[1:]) or None
    if reason is not None and (len(reason) > MAX_REASON_LENGTH or _REDACTOR.redact(reason) != reason):
        raise _usage_error("Keep the reason short and free of keys or tokens.", CANCEL_USAGE)
    return CancelCommand(run_id=tokens[0].lower(), reason=reason)


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
        raise _usage_error(
            f"Values are never typed in Slack. Name only the secret, e.g. `/secret rotate {example}`; "
            "the bot makes or asks for the new value."
        )


def _take_app_flag(tokens: list[str], policy: Policy, usage: str = ROTATE_USAGE) -> tuple[str, list[str]]:
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
    return _resolve_app(app, policy, usage), rest


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
    return any(token.lower() == name.lower() for name in policy.secrets)


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
