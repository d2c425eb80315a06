"""What an import would change on Fly: each name of the env file as new, changed or unchanged.

Fly lists a digest of each value but never the value, and its digest algorithm is not
published, so the bot cannot compute the digest of a value from the file. It compares
through its own backups instead: a backup whose recorded Fly digest is the digest Fly
lists now contains Fly's current value, and that value is compared with the file's. A name
whose Fly digest matches no backup counts as changed, because the bot cannot tell, and
setting a value that happens to be the same only restarts the machines once more.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from enum import Enum

from bot.backups import BackupRecord, BackupStore
from bot.errors import CommandError, UnsafeValueError
from bot.flyctl import FlySecret, encode_import
from bot.importing.envfile import EnvFile

logger = logging.getLogger(__name__)


class Change(str, Enum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class PlannedSecret:
    """One name of the file and what the import does with it; never its value."""

    name: str
    line: int
    change: Change
    # Fly's digest before the import, None for a new secret.
    fly_digest: str | None
    # Why a changed secret counts as changed, for the listing.
    note: str | None = None
    # Fly's value is unknown to the bot, so it may equal the file's and keep its digest.
    value_unknown: bool = False


@dataclass(frozen=True)
class ImportPlan:
    app: str
    secrets: tuple[PlannedSecret, ...]
    # Names on Fly that the file does not mention; the import leaves them as they are.
    untouched: tuple[str, ...]
    # The values to send, new and changed ones only; kept out of repr so a log line cannot show them.
    values: dict[str, str] = field(repr=False)

    def of(self, change: Change) -> list[PlannedSecret]:
        return [secret for secret in self.secrets if secret.change is change]

    @property
    def names_to_set(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def digests_before(self) -> dict[str, str | None]:
        return {secret.name: secret.fly_digest for secret in self.secrets if secret.name in self.values}

    @property
    def digests_to_leave(self) -> dict[str, str | None]:
        """Return, per secret set, the digest verification expects to change: None where it may stay.

        A value unknown to the bot may be the one Fly holds, and then keeps its digest.
        """
        return {secret.name: None if secret.value_unknown else secret.fly_digest
                for secret in self.secrets if secret.name in self.values}


async def build_plan(env: EnvFile, *, app: str, listing: list[FlySecret], backups: BackupStore) -> ImportPlan:
    """Compare the file with Fly's list and the backups; raise CommandError if a value cannot be sent."""
    on_fly = {secret.name: secret for secret in listing}
    planned: list[PlannedSecret] = []
    values: dict[str, str] = {}
    for name, value in env.values.items():
        secret = on_fly.get(name)
        line = env.lines[name]
        if secret is None:
            planned.append(PlannedSecret(name, line, Change.NEW, None))
            values[name] = value
            continue
        record = await _backup_with_digest(backups, app, name, secret.digest)
        if record is None:
            planned.append(PlannedSecret(name, line, Change.CHANGED, secret.digest, value_unknown=True,
                                         note="Fly's value is unknown to secretbot (no backup has its digest)"))
            values[name] = value
            continue
        stored = await backups.value(app, name, record.version)
        if hmac.compare_digest(stored.encode("utf-8"), value.encode("utf-8")):
            planned.append(PlannedSecret(name, line, Change.UNCHANGED, secret.digest))
            continue
        planned.append(PlannedSecret(name, line, Change.CHANGED, secret.digest,
                                     note=f"differs from backup version {record.version}, which Fly holds now"))
        values[name] = value

    if values:
        try:
            # Proves before anything is confirmed that flyctl reads every value back unchanged.
            encode_import(values)
        except UnsafeValueError as exc:
            raise CommandError(f"{exc}") from None
    untouched = tuple(sorted(set(on_fly) - set(env.values)))
    plan = ImportPlan(app=app, secrets=tuple(planned), untouched=untouched, values=values)
    logger.info("import planned app=%s new=%d changed=%d unchanged=%d untouched=%d", app,
                len(plan.of(Change.NEW)), len(plan.of(Change.CHANGED)), len(plan.of(Change.UNCHANGED)),
                len(untouched))
    return plan


async def _backup_with_digest(backups: BackupStore, app: str, name: str, digest: str) -> BackupRecord | None:
    """Return the newest backup version that Fly reported with `digest`, or None."""
    matching = [record for record in await backups.versions(app, name) if record.fly_digest == digest]
    return matching[-1] if matching else None
