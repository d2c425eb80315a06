"""Run the Slack stand-in as its own process, to try the bot by hand.

    python -m tests.standins.slack_cli --port 0 --state-out /tmp/slack-state.json

Once serving, the process prints `SLACK_API_URL=<base url>` as the first line of stdout.
It stops on SIGINT or SIGTERM, or after --max-seconds, and then writes the workspace
state (messages, ephemerals, views and recorded calls) as JSON to --state-out.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from .slack_api import SlackStandin

logger = logging.getLogger(__name__)


def state_snapshot(stand_in: SlackStandin) -> dict[str, Any]:
    """Return the stand-in's state as plain JSON-ready data."""
    workspace = stand_in.workspace
    return {
        "base_url": stand_in.base_url,
        "messages": {
            channel: [dataclasses.asdict(message) for message in messages.values()]
            for channel, messages in workspace.messages.items()
        },
        "ephemerals": [dataclasses.asdict(ephemeral) for ephemeral in workspace.ephemerals],
        "views": [dataclasses.asdict(view) for view in workspace.views.values()],
        "home_views": {user: dataclasses.asdict(view) for user, view in workspace.home_views.items()},
        "calls": [
            {"method": call.method, "status": call.status, "error": call.error, "args": call.args, "at": call.at}
            for call in stand_in.calls
        ],
        "view_response_problems": list(stand_in.view_response_problems),
    }


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.standins.slack_cli", description="Run the Slack stand-in.")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: a free port)")
    parser.add_argument("--state-out", type=Path, help="file to write the final state to, as JSON")
    parser.add_argument("--token", default="xoxb-test", help="bot token the stand-in accepts (default xoxb-test)")
    parser.add_argument("--team-id", default="T0TEAM", help="workspace ID (default T0TEAM)")
    parser.add_argument("--bot-user-id", default="U0BOT", help="the bot's user ID (default U0BOT)")
    parser.add_argument(
        "--channel", action="append", help="channel ID the bot is in; repeat for more (default C0123OPS)"
    )
    parser.add_argument("--user", action="append", help="user ID; repeat for more (default U0AAA, U0BBB, U0CCC)")
    parser.add_argument(
        "--max-seconds", type=float, default=3600.0, help="stop after this many seconds (default 3600)"
    )
    return parser.parse_args(argv)


async def serve(options: argparse.Namespace) -> None:
    """Serve until a signal arrives or --max-seconds pass, then write the state file."""
    stand_in = SlackStandin(
        bot_token=options.token,
        team_id=options.team_id,
        bot_user_id=options.bot_user_id,
        channels=options.channel or ["C0123OPS"],
        users=options.user or ["U0AAA", "U0BBB", "U0CCC"],
        port=options.port,
    )
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop_requested.set)

    await stand_in.start()
    print(f"SLACK_API_URL={stand_in.base_url}", flush=True)
    try:
        await asyncio.wait_for(stop_requested.wait(), timeout=options.max_seconds)
    except TimeoutError:
        logger.info("Slack stand-in reached --max-seconds=%s and stops", options.max_seconds)
    finally:
        snapshot = state_snapshot(stand_in)
        await stand_in.stop()
        if options.state_out is not None:
            options.state_out.write_text(json.dumps(snapshot, indent=2, default=str))
            logger.info("Slack stand-in state written path=%s", options.state_out)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(parse_arguments(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
