"""`/secret rotated` is rejected for a secret that the policy describes but Fly does not have."""

from __future__ import annotations

from tests.botprocess import BotProcess
from tests.conftest import APPROVER
from tests.flow import CHANNEL, query
from tests.inventory_flow import block_texts, day, next_ephemeral, wait_for_inventory
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

# The fly fixture puts four secrets on APP and one on hotel-staging.
SYNCED_ROWS = 5


async def test_rotated_secret_not_on_fly_rejected(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    # WAHA_TOKEN has a built-in policy but is not set on APP.
    await driver.slash_command(f"rotated WAHA_TOKEN {day(200)}", user_id=APPROVER, channel_id=CHANNEL)
    rejected = await next_ephemeral(slack, APPROVER, after=0)

    await driver.slash_command("status", user_id=APPROVER, channel_id=CHANNEL)
    status = await next_ephemeral(slack, APPROVER, after=1)

    assert "WAHA_TOKEN is not set on hotel-voice-bot" in rejected.text
    assert "WAHA_TOKEN" not in "\n".join(block_texts(status.blocks))
    assert query(bot.database, "SELECT name FROM inventory WHERE name = 'WAHA_TOKEN'") == []


async def test_rotated_not_on_fly_no_removal(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    await wait_for_inventory(bot.database, rows=SYNCED_ROWS)
    await driver.slash_command(f"rotated WAHA_TOKEN {day(200)}", user_id=APPROVER, channel_id=CHANNEL)
    await next_ephemeral(slack, APPROVER, after=0)

    await driver.slash_command("sync", user_id=APPROVER, channel_id=CHANNEL)
    # The acknowledgement is not an ephemeral; the result is the second one.
    await next_ephemeral(slack, APPROVER, after=1)

    removals = query(bot.database, "SELECT secret FROM audit_log WHERE event = 'inventory.removed'")
    assert [row["secret"] for row in removals] == []
