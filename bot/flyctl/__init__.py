"""The flyctl client: typed commands, stdin encoding for imports, verification.

Everything secretbot does on Fly goes through `FlyctlClient`, which shells out to
flyctl with values on standard input only and redacts all output it keeps.
"""

from bot.flyctl.client import FlyctlClient
from bot.flyctl.importfile import encode_import, parse_import
from bot.flyctl.runner import CommandResult
from bot.flyctl.shapes import AppStatus, Check, FlySecret, LogLine, Machine, Release
from bot.flyctl.verify import VerificationReport, check_health_url, evaluate_deployment, verify_deployment
from bot.redact import Redactor

__all__ = [
    "AppStatus",
    "Check",
    "CommandResult",
    "FlySecret",
    "FlyctlClient",
    "LogLine",
    "Machine",
    "Redactor",
    "Release",
    "VerificationReport",
    "check_health_url",
    "encode_import",
    "evaluate_deployment",
    "parse_import",
    "verify_deployment",
]
