"""Socket Mode: the real `secretbot serve` process with SLACK_APP_TOKEN set, connected to the
WebSocket stand-in, with the same listeners, acknowledgements and repeat detection as over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from bot.errors import ConfigError
from bot.settings import Settings, load_settings
from handlers.socket_mode import _SdkLogFilter
from tests.botprocess import BOT_TOKEN, FLY_TOKEN, BotProcess
from tests.conftest import APP, APPROVER, REQUESTER
from tests.flow import (
    CHANNEL,
    query,
    response_texts,
    run_messages,
    wait_for_buttons,
    wait_for_parent,
    wait_for_status,
)
from tests.standins.fly_state import FlyState
from tests.standins.slack_api import SlackStandin
from tests.standins.socket_mode import AckTimeout, SocketModeDriver, SocketModeStandin

SECRETBOT = str(Path(sys.executable).parent / "secretbot")
OLD_VALUE = "old-jwt-secret-value"


def socket_bot_process(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path, app_token: str) -> BotProcess:
    """Return the bot in Socket Mode, with an empty signing secret because nothing is signed."""
    return BotProcess(workdir=bot_dir, slack_api_url=slack.base_url, flyctl=flyctl_wrapper,
                      extra_env={"SLACK_APP_TOKEN": app_token, "SLACK_SIGNING_SECRET": ""})


@pytest.fixture
async def socket_mode(slack: SlackStandin) -> AsyncIterator[SocketModeStandin]:
    async with SocketModeStandin(slack) as stand_in:
        yield stand_in


@pytest.fixture
async def socket_bot(bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path,
                     socket_mode: SocketModeStandin) -> AsyncIterator[BotProcess]:
    process = socket_bot_process(bot_dir, slack, flyctl_wrapper, socket_mode.app_token)
    await process.start()
    try:
        await socket_mode.wait_connected()
        yield process
    finally:
        await process.stop_async()


@pytest.fixture
def socket_driver(socket_bot: BotProcess, socket_mode: SocketModeStandin, slack: SlackStandin) -> SocketModeDriver:
    return SocketModeDriver(socket_mode=socket_mode, slack=slack)


def issued_urls(slack: SlackStandin) -> list[str]:
    return [call.response["url"] for call in slack.calls_to("apps.connections.open") if call.ok]


async def run_serve_until_exit(bot: BotProcess) -> tuple[int | None, str]:
    """Run `secretbot serve` until it exits, without blocking the event loop that the Slack stand-in runs on."""
    (bot.workdir / "secretbot.toml").write_text(bot.config)
    process = await asyncio.create_subprocess_exec(SECRETBOT, "serve", cwd=bot.workdir, env=bot.environment(),
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, stderr.decode()


async def test_rotation_survives_reconnect(
    socket_bot: BotProcess, socket_driver: SocketModeDriver, socket_mode: SocketModeStandin,
    slack: SlackStandin, fly: FlyState, flyctl_log: Path,
) -> None:
    ack = await socket_driver.slash_command("rotate JWT_SECRET quarterly rotation", user_id=REQUESTER,
                                            channel_id=CHANNEL)
    assert ack.status == 200
    assert ack.elapsed < 3.0
    assert "Starting the rotation of JWT_SECRET" in ack.text
    parent = await wait_for_buttons(slack, await wait_for_parent(slack), "step_approve")

    assert await socket_mode.drop() == 1
    await socket_mode.wait_connected(2)
    assert len(slack.calls_to("apps.connections.open")) == 2
    assert socket_mode.rejected_handshakes == 0

    click = await socket_driver.click(channel=CHANNEL, ts=parent.ts, action_id="step_approve", user_id=APPROVER)
    assert click.status == 200
    assert click.elapsed < 3.0
    await wait_for_status(slack, parent, "done", timeout=60)

    first, second = socket_mode.connections
    assert [envelope.type for envelope in first.envelopes] == ["slash_commands"]
    assert [envelope.type for envelope in second.envelopes] == ["interactive"]
    for envelope in socket_mode.envelopes():
        assert len(socket_mode.acknowledgements_of(envelope.envelope_id)) == 1, envelope.type
    assert socket_mode.problems == []

    new_value = fly.secret_value(APP, "JWT_SECRET")
    assert new_value is not None
    assert new_value != OLD_VALUE
    imports = [call for call in fly.invocations(flyctl_log) if call["argv"][:2] == ["secrets", "import"]]
    assert len(imports) == 1
    assert len(run_messages(slack)) == 1
    assert [row["status"] for row in query(socket_bot.database, "SELECT status FROM runs")] == ["succeeded"]
    rotated = query(socket_bot.database, "SELECT detail FROM audit_log WHERE event = 'secret.rotated'")
    assert len(rotated) == 1
    assert json.loads(rotated[0]["detail"])["approved_by"] == APPROVER

    assert await socket_bot.stop_async() == 0
    assert socket_mode.open_connections() == []
    log = socket_bot.log()
    assert "Socket Mode connected" in log
    assert "Socket Mode connection lost close_code=1001; reconnecting" in log
    assert "Socket Mode reconnected connection=2" in log
    assert "Socket Mode disconnected" in log
    # Neither credentials nor the WebSocket URLs, whose tickets open a connection, even at DEBUG.
    for secret_text in (new_value, OLD_VALUE, socket_mode.app_token, BOT_TOKEN, FLY_TOKEN):
        assert secret_text not in log
    urls = issued_urls(slack)
    assert len(urls) == 2
    for url in urls:
        ticket = parse_qs(urlsplit(url).query)["ticket"][0]
        assert ticket not in log


async def test_healthz_in_socket_mode(socket_bot: BotProcess) -> None:
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.get(f"{socket_bot.url}/healthz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
        # Requests come over the socket only, so the HTTP endpoint for Slack does not exist.
        async with session.post(socket_bot.events_url, data=b"command=%2Fsecret") as response:
            assert response.status == 404


async def test_retried_command_handled_once(
    socket_bot: BotProcess, socket_driver: SocketModeDriver, socket_mode: SocketModeStandin, slack: SlackStandin,
) -> None:
    first = await socket_driver.slash_command("rotate JWT_SECRET", user_id=REQUESTER, channel_id=CHANNEL)
    await wait_for_parent(slack)
    original = socket_mode.envelopes()[-1]

    retry = await socket_mode.deliver("slash_commands", original.payload, retry_attempt=1, retry_reason="timeout")
    # Give a wrongly handled repeat time to post a second run or an "already open" reply.
    await asyncio.sleep(1.0)

    assert "Starting the rotation of JWT_SECRET" in first.text
    # The repeat is acknowledged without the listener's response, because the listener did not run.
    assert retry.payload is None
    assert retry.envelope_id != original.envelope_id
    assert len(query(socket_bot.database, "SELECT id FROM runs")) == 1
    assert len(run_messages(slack)) == 1
    assert not [reply for reply in response_texts(slack, REQUESTER) if "already has a run in progress" in reply]
    assert "ignored a repeated Socket Mode delivery type=slash_commands" in socket_bot.log()
    assert "retry_attempt=1 retry_reason=timeout" in socket_bot.log()


async def test_retried_event_handled_once(
    socket_bot: BotProcess, socket_driver: SocketModeDriver, slack: SlackStandin,
) -> None:
    home_opened = {"type": "app_home_opened", "user": REQUESTER, "channel": "D0HOME", "tab": "home"}
    delivered = await socket_driver.event(home_opened)
    await slack.wait_for(lambda: slack.calls_to("views.publish"), description="home tab published")

    # Slack's retry of an event carries the same event_id in a new envelope.
    retried = await socket_driver.event(home_opened, retry_num=1, retry_reason="timeout",
                                        event_id=delivered.payload["event_id"])
    await asyncio.sleep(1.0)

    assert delivered.status == 200
    assert retried.status == 200
    assert len(slack.calls_to("views.publish")) == 1
    assert "ignored a repeated Socket Mode delivery type=events_api" in socket_bot.log()


@pytest.mark.parametrize("reason", ["refresh_requested", "warning"])
async def test_disconnect_message_reconnects(
    socket_bot: BotProcess, socket_driver: SocketModeDriver, socket_mode: SocketModeStandin,
    slack: SlackStandin, reason: str,
) -> None:
    await socket_mode.request_reconnect(reason)
    await socket_mode.wait_connected(2)
    # The bot closes the old connection itself once the new one is open.
    await slack.wait_for(lambda: len(socket_mode.open_connections()) == 1, description="old connection closed")

    ack = await socket_driver.slash_command("help", user_id=REQUESTER, channel_id=CHANNEL)

    assert "/secret rotate" in ack.text
    assert len(slack.calls_to("apps.connections.open")) == 2
    assert socket_mode.connections[1].envelopes[0].type == "slash_commands"
    assert f"Slack requested a new Socket Mode connection reason={reason}" in socket_bot.log()


async def test_abrupt_drop_reconnects(
    socket_bot: BotProcess, socket_driver: SocketModeDriver, socket_mode: SocketModeStandin, slack: SlackStandin,
) -> None:
    assert await socket_mode.drop(abrupt=True) == 1
    # Without a close frame the client notices at its next ping, 5 s apart.
    await socket_mode.wait_connected(2, timeout=30)

    ack = await socket_driver.slash_command("help", user_id=REQUESTER, channel_id=CHANNEL)

    assert "/secret rotate" in ack.text
    assert len(slack.calls_to("apps.connections.open")) == 2
    assert "Socket Mode reconnected connection=2" in socket_bot.log()


async def test_rejected_handshake_gets_new_url(
    bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path, socket_mode: SocketModeStandin,
) -> None:
    # The URL from the start-up check is rejected, so the first connection needs a second URL.
    socket_mode.reject_next_handshakes(1)
    process = socket_bot_process(bot_dir, slack, flyctl_wrapper, socket_mode.app_token)
    await process.start()
    try:
        await socket_mode.wait_connected(timeout=30)
        driver = SocketModeDriver(socket_mode=socket_mode, slack=slack)
        ack = await driver.slash_command("help", user_id=REQUESTER, channel_id=CHANNEL)
    finally:
        await process.stop_async()

    assert "/secret rotate" in ack.text
    assert socket_mode.rejected_handshakes == 1
    assert len(slack.calls_to("apps.connections.open")) == 2
    assert "Socket Mode handshake rejected status=401; requesting a new URL" in process.log()


async def test_malformed_envelope_not_acknowledged(
    socket_bot: BotProcess, socket_driver: SocketModeDriver, socket_mode: SocketModeStandin,
) -> None:
    malformed = {"type": "block_actions", "user": {"id": APPROVER}, "actions": "step_approve"}
    with pytest.raises(AckTimeout):
        await socket_mode.deliver("interactive", malformed)

    ack = await socket_driver.slash_command("help", user_id=REQUESTER, channel_id=CHANNEL)

    assert "/secret rotate" in ack.text
    assert "rejected malformed Socket Mode envelope: payload of type block_actions has no actions list" in socket_bot.log()


@pytest.mark.parametrize(("app_token", "expected"), [
    ("xoxb-1-a-bot-token", "SLACK_APP_TOKEN is a bot token (xoxb-)"),
    ("0123456789abcdef", "SLACK_APP_TOKEN must be an app-level token starting with 'xapp-'"),
    ("xapp-1-A0SECRETBOT-1-abc\n", "SLACK_APP_TOKEN contains characters other than letters, digits and '-'"),
])
async def test_malformed_app_token_stops_startup(
    bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path, app_token: str, expected: str,
) -> None:
    bot = socket_bot_process(bot_dir, slack, flyctl_wrapper, app_token)

    code, stderr = await run_serve_until_exit(bot)

    assert code == 2
    assert expected in stderr
    assert app_token.strip() not in stderr
    assert slack.calls_to("apps.connections.open") == []


async def test_rejected_app_token_stops_startup(
    bot_dir: Path, slack: SlackStandin, flyctl_wrapper: Path, socket_mode: SocketModeStandin,
) -> None:
    unknown = "xapp-1-A0SECRETBOT-1-0000000000000000"
    bot = socket_bot_process(bot_dir, slack, flyctl_wrapper, unknown)

    code, stderr = await run_serve_until_exit(bot)

    assert code == 2
    assert "Slack rejected SLACK_APP_TOKEN (invalid_auth)" in stderr
    assert "connections:write" in stderr
    assert unknown not in stderr
    assert socket_mode.connections == []


async def test_standin_rejects_used_ticket(slack: SlackStandin, socket_mode: SocketModeStandin) -> None:
    headers = {"Authorization": f"Bearer {socket_mode.app_token}"}
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.post(f"{slack.base_url}apps.connections.open", headers=headers) as response:
            url = (await response.json())["url"]
        async with session.ws_connect(url) as first:
            hello = await first.receive_json(timeout=5)
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(url)

    assert hello["type"] == "hello"
    assert hello["num_connections"] == 1
    assert socket_mode.rejected_handshakes == 1


async def test_standin_rejects_bot_token(slack: SlackStandin, socket_mode: SocketModeStandin) -> None:
    async with (aiohttp.ClientSession(trust_env=False) as session,
                session.post(f"{slack.base_url}apps.connections.open",
                             headers={"Authorization": f"Bearer {BOT_TOKEN}"}) as response):
        body = await response.json()

    assert body == {"ok": False, "error": "not_allowed_token_type"}


def test_settings_read_app_token() -> None:
    settings = load_settings({"SLACK_APP_TOKEN": "xapp-1-A0-1-abc", "SLACK_BOT_TOKEN": "xoxb-1-abc"})

    assert settings.require_socket_mode() == ("xoxb-1-abc", "xapp-1-A0-1-abc")
    assert "xapp-1-A0-1-abc" not in repr(settings)


def test_socket_mode_needs_bot_token() -> None:
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN"):
        Settings(slack_app_token="xapp-1-A0-1-abc").require_socket_mode()


def test_sdk_log_filter_removes_url_and_traceback() -> None:
    log_filter = _SdkLogFilter()
    url = "wss://wss-primary.slack.com/link/?ticket=abc123secretticket&app_id=A0"
    try:
        raise ConnectionError(f"handshake failed url={url}")
    except ConnectionError:
        record = logging.LogRecord("slack_sdk", logging.ERROR, __file__, 1, "Failed to connect (%s)", (url,),
                                   sys.exc_info())

    assert log_filter.filter(record)
    assert "abc123secretticket" not in record.getMessage()
    assert "<WebSocket URL>" in record.getMessage()
    assert "(ConnectionError)" in record.getMessage()
    assert record.exc_info is None


def test_sdk_log_filter_drops_debug() -> None:
    record = logging.LogRecord("slack_sdk", logging.DEBUG, __file__, 1, "Received message %s", ("{}",), None)

    assert not _SdkLogFilter().filter(record)
