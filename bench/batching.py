"""Batching: one `/secret rotate` on N secrets of one app, counted in the flyctl stand-in's invocation log."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.environment import APPROVER, CHANNEL, REQUESTER, SIGNING_SECRET, World
from bench.runs import wait_for_approval_buttons, wait_until_ended
from tests.botprocess import BotProcess
from tests.flow import run_messages
from tests.standins.fly_state import FlyState
from tests.standins.slack_driver import SlackDriver

# flyctl commands that change an app's secrets or restart its machines.
CHANGING_COMMANDS = (("secrets", "import"), ("secrets", "set"), ("secrets", "unset"), ("secrets", "deploy"),
                     ("deploy",), ("apps", "restart"), ("machine", "restart"), ("machines", "restart"))


@dataclass(frozen=True)
class BatchResult:
    secrets: int
    outcome: str
    changing_calls: int
    import_calls: int
    all_calls: int
    new_releases: int
    run_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_changing(argv: list[str]) -> bool:
    return any(argv[:len(command)] == list(command) for command in CHANGING_COMMANDS)


async def measure_batch(world: World, bot: BotProcess, *, app: str, names: list[str], timeout: float) -> BatchResult:
    """Rotate `names` on `app` in one command, approve it, and count the flyctl calls and releases it caused."""
    driver = SlackDriver(bot_url=bot.events_url, signing_secret=SIGNING_SECRET, slack=world.slack)
    releases_before = len(world.fly.releases(app))
    seen = {message.ts for message in run_messages(world.slack)}
    started_wall = time.time()
    started = time.monotonic()

    await driver.slash_command(f"rotate {' '.join(names)} --app {app} batch benchmark", user_id=REQUESTER,
                               channel_id=CHANNEL)
    [parent] = await wait_for_approval_buttons(world.slack, 1, exclude=seen, timeout=timeout)
    await driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    outcome = await wait_until_ended(world.slack, [parent.ts], timeout=timeout)
    elapsed = time.monotonic() - started

    calls = [call for call in FlyState.invocations(world.flyctl_log)
             if call["started"] >= started_wall and app in call["argv"]]
    return BatchResult(
        secrets=len(names),
        outcome=",".join(outcome),
        changing_calls=sum(1 for call in calls if _is_changing(call["argv"])),
        import_calls=sum(1 for call in calls if call["argv"][:2] == ["secrets", "import"]),
        all_calls=len(calls),
        new_releases=len(world.fly.releases(app)) - releases_before,
        run_seconds=round(elapsed, 2),
    )
