"""The baseline: a bare slack-bolt AsyncApp on aiohttp whose only listeners acknowledge.

    SLACK_SIGNING_SECRET=... python -m bench.baseline PORT

It checks signatures with the same signing secret (bolt's own check) and serves
`/healthz`, so the benchmark drives it exactly like the bot. A fixed authorization result
stands in for the bot token, because the baseline must not call the Slack Web API.
"""

from __future__ import annotations

import logging
import os
import re
import sys

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult


def build_app(signing_secret: str) -> web.Application:
    async def authorize() -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=None, team_id="T0TEAM", bot_token="xoxb-baseline", bot_id="B0BOT",
                               bot_user_id="U0BOT")

    bolt = AsyncApp(signing_secret=signing_secret, authorize=authorize, process_before_response=False,
                    logger=logging.getLogger("slack_bolt"))

    @bolt.command(re.compile(".*"))
    async def command(ack: AsyncAck) -> None:
        await ack()

    @bolt.action(re.compile(".*"))
    async def action(ack: AsyncAck) -> None:
        await ack()

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    web_app = web.Application()
    web_app.router.add_post("/slack/events", events)
    web_app.router.add_get("/healthz", healthz)
    return web_app


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    port = int(sys.argv[1])
    web.run_app(build_app(os.environ["SLACK_SIGNING_SECRET"]), host="127.0.0.1", port=port, access_log=None,
                print=None)


if __name__ == "__main__":
    main()
