"""The policies chosen with `/secret add`, read back from the inventory for rotations.

`VerifyNewSecret` stores the priority and source chosen for a name that secretbot.toml
does not list on that name's inventory row. Rotations read them here, per app, because the
same name may have been added to two apps with different choices.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.policy import SecretPolicy, chosen_policy
from bot.storage.models import InventorySecret

AddedPolicies = dict[str, dict[str, SecretPolicy]]


async def load_added_policies(sessions: async_sessionmaker[AsyncSession]) -> AddedPolicies:
    """Return every stored choice, by app and then by name.

    A row removed from Fly keeps its choice, so `/secret lost` can still replace it. Rows
    whose stored priority or source is not a known value are left out.
    """
    async with sessions() as session:
        rows = (await session.execute(
            select(InventorySecret.app, InventorySecret.name, InventorySecret.priority, InventorySecret.value_source)
            .where(InventorySecret.priority.is_not(None), InventorySecret.value_source.is_not(None))
        )).all()
    added: AddedPolicies = {}
    for app, name, priority, source in rows:
        policy = chosen_policy(name, priority, source)
        if policy is not None:
            added.setdefault(app, {})[name] = policy
    return added
