"""The reason shown for a rotation that a compromised-secret run took over, through the real server process."""

from __future__ import annotations

import json

from tests.botprocess import BotProcess
from tests.conftest import BYSTANDER, REQUESTER
from tests.flow import (
    CHANNEL,
    parent_step_lines,
    query,
    thread_texts,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.standins.slack_api import SlackStandin
from tests.standins.slack_driver import SlackDriver

MENTION = f"<@{BYSTANDER}>"


def block_texts(blocks: list[dict[str, object]]) -> list[str]:
    return [block["text"]["text"] for block in blocks  # type: ignore[index]
            if block.get("type") == "section" and isinstance(block.get("text"), dict)]


async def test_takeover_names_requester_by_mention(
    bot: BotProcess, driver: SlackDriver, slack: SlackStandin
) -> None:
    await driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    rotation = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")
    rotation_id = query(bot.database, "SELECT id FROM runs")[0]["id"]

    await driver.slash_command("compromised JWT_SECRET -- leaked in a support ticket", user_id=BYSTANDER,
                               channel_id=CHANNEL)
    await wait_for_parent(slack, index=1)
    rotation = await wait_for_status(slack, rotation, "cancelled")
    reply = await slack.wait_for(
        lambda: next((text for text in thread_texts(slack, rotation) if "superseded by run" in text), None),
        description="takeover posted in the rotation's thread")

    first_line = parent_step_lines(rotation)[0]
    assert "superseded by run" in first_line
    assert first_line.endswith(f"({MENTION})")
    assert MENTION in reply
    # Slack renders only the mention as a name; a bare or escaped user ID would show as typed.
    for text in [reply, *block_texts(rotation.blocks)]:
        assert BYSTANDER not in text.replace(MENTION, ""), text
        assert "&lt;@" not in text, text

    ended = query(bot.database, "SELECT actor, detail FROM audit_log WHERE run_id = ? AND event = 'run.cancelled'",
                  rotation_id)
    assert len(ended) == 1
    assert ended[0]["actor"] == BYSTANDER
    reason = json.loads(ended[0]["detail"])["reason"]
    assert reason.startswith("Cancelled: superseded by run ")
    assert BYSTANDER not in reason
