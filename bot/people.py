"""Resolution of approvers and operators: configured user IDs and user groups, expanded to user IDs.

secretbot.toml names people by Slack user ID (U…, W…) or user group ID (S…), never by
display name or e-mail, because both can be changed by their owner. Groups are expanded
through a `Directory` (Slack's `usergroups.users.list`) and cached for `CACHE_SECONDS`, so
a click costs no Slack call in the common case. When a group cannot be read, its last
known members are used. A group never read counts as empty, so a Slack outage never
widens who may approve.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from bot.policy import Policy

logger = logging.getLogger(__name__)

# How long the members of a user group are trusted before they are read again.
CACHE_SECONDS = 300.0
READ_TIMEOUT_SECONDS = 1.5


def is_group(entry: str) -> bool:
    return entry.startswith("S")


class Directory(Protocol):
    async def group_members(self, group_id: str) -> frozenset[str]:
        """Return the user IDs in a user group; raise on any failure."""
        ...


class People:
    """Expands the user groups in slack.approvers and slack.operators into user IDs."""

    def __init__(self, *, directory: Directory | None = None, cache_seconds: float = CACHE_SECONDS) -> None:
        self.directory = directory
        self.cache_seconds = cache_seconds
        self._members: dict[str, frozenset[str]] = {}
        self._read_at: dict[str, float] = {}

    async def resolve(self, policy: Policy) -> Policy:
        """Return `policy` with every group in approvers and operators replaced by its members."""
        groups = {entry for entry in (*policy.slack.approvers, *policy.slack.operators) if is_group(entry)}
        if not groups:
            return policy
        for group in sorted(groups):
            await self._refresh(group)
        slack = replace(policy.slack, approvers=self._expand(policy.slack.approvers),
                        operators=self._expand(policy.slack.operators))
        return replace(policy, slack=slack)

    def _expand(self, entries: Iterable[str]) -> tuple[str, ...]:
        users: list[str] = []
        for entry in entries:
            members = sorted(self._members.get(entry, frozenset())) if is_group(entry) else [entry]
            users.extend(member for member in members if member not in users)
        return tuple(users)

    async def _refresh(self, group: str) -> None:
        read_at = self._read_at.get(group)
        if read_at is not None and time.monotonic() - read_at < self.cache_seconds:
            return
        if self.directory is None:
            logger.warning("user group %s is configured but no Slack directory is available; it counts as empty",
                           group)
            return
        try:
            # A click waits for this read before it is acknowledged, within Slack's 3 seconds.
            members = await asyncio.wait_for(self.directory.group_members(group), timeout=READ_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the last known members
            known = len(self._members.get(group, frozenset()))
            logger.warning("cannot read user group %s (%s); using the %d member(s) last read", group,
                           type(exc).__name__, known)
            return
        self._members[group] = members
        self._read_at[group] = time.monotonic()
        logger.info("user group read group=%s members=%d", group, len(members))
