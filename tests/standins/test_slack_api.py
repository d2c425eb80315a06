"""Tests of the Slack Web API stand-in and the signed-request driver.

The stand-in is driven with slack_sdk's real AsyncWebClient, and the driver's requests
go to real aiohttp servers on 127.0.0.1: a recorder for exact bytes and headers, and a
real bolt AsyncApp for the end-to-end path.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from .slack_api import SlackStandin
from .slack_driver import SlackDriver

TOKEN = "xoxb-test"
CHANNEL = "C0123OPS"
SIGNING_SECRET = "test-signing-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack_sdk applies proxy variables even to 127.0.0.1, and bolt switches to OAuth
    # when client id and secret are set.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SKIP_SLACK_SDK_WARNING", "1")


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandin]:
    async with SlackStandin(bot_token=TOKEN, channels=[CHANNEL], users=["U0AAA", "U0BBB", "U0CCC"]) as stand_in:
        yield stand_in


@pytest.fixture
def client(slack: SlackStandin) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=slack.base_url, timeout=5)


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(action_id: str, text: str = "Approve", value: str = "run-1") -> dict[str, Any]:
    return {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": text}, "value": value}


def modal(**changes: Any) -> dict[str, Any]:
    view = {
        "type": "modal",
        "callback_id": "rotate_reason",
        "title": {"type": "plain_text", "text": "Rotate secret"},
        "submit": {"type": "plain_text", "text": "Rotate"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "reason_text"},
            }
        ],
    }
    view.update(changes)
    return view


async def error_of(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value


# Messages


async def test_post_update_and_reply(slack: SlackStandin, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="Runbook", blocks=[section("Step 1")])
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="Runbook v2", blocks=[section("Step 2")])
    reply = await client.chat_postMessage(channel=CHANNEL, thread_ts=posted["ts"], text="Approved")

    assert [message.text for message in slack.messages(CHANNEL)] == ["Runbook v2"]
    assert slack.messages(CHANNEL)[0].blocks[0]["text"]["text"] == "Step 2"
    assert slack.messages(CHANNEL)[0].edited_ts is not None
    assert [message.ts for message in slack.replies(CHANNEL, posted["ts"])] == [reply["ts"]]
    assert reply["message"]["thread_ts"] == posted["ts"]


async def test_post_returns_unique_ts(slack: SlackStandin, client: AsyncWebClient) -> None:
    stamps = [(await client.chat_postMessage(channel=CHANNEL, text=str(n)))["ts"] for n in range(20)]

    assert len(set(stamps)) == 20
    assert all(len(ts.split(".")[1]) == 6 for ts in stamps)
    assert stamps == sorted(stamps)


async def test_reply_broadcast_shows_in_channel(slack: SlackStandin, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel=CHANNEL, text="Runbook")
    await client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="Done", reply_broadcast=True)

    assert [message.text for message in slack.messages(CHANNEL)] == ["Runbook", "Done"]
    assert slack.replies(CHANNEL, parent["ts"])[0].reply_broadcast is True


async def test_update_text_only_removes_blocks(slack: SlackStandin, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="Runbook", blocks=[section("Step 1")])
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="Finished")

    assert slack.message(CHANNEL, posted["ts"]).blocks == []  # type: ignore[union-attr]


async def test_update_errors(slack: SlackStandin, client: AsyncWebClient) -> None:
    human = slack.add_message(CHANNEL, "hello", user="U0AAA")
    ephemeral = await client.chat_postEphemeral(channel=CHANNEL, user="U0AAA", text="only you")
    posted = await client.chat_postMessage(channel=CHANNEL, text="Runbook")

    unknown = await error_of(client.chat_update(channel=CHANNEL, ts="1.000001", text="x"))
    foreign = await error_of(client.chat_update(channel=CHANNEL, ts=human.ts, text="x"))
    of_ephemeral = await error_of(client.chat_update(channel=CHANNEL, ts=ephemeral["message_ts"], text="x"))
    too_long = await error_of(client.chat_update(channel=CHANNEL, ts=posted["ts"], text="x" * 4001))

    assert unknown.response["error"] == "message_not_found"
    assert foreign.response["error"] == "cant_update_message"
    assert of_ephemeral.response["error"] == "cant_update_message"
    assert too_long.response["error"] == "msg_too_long"
    assert slack.message(CHANNEL, posted["ts"]).text == "Runbook"  # type: ignore[union-attr]


async def test_long_text_truncated_at_40000(slack: SlackStandin, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="y" * 40_050)

    assert len(slack.message(CHANNEL, posted["ts"]).text) == 40_000  # type: ignore[union-attr]


async def test_post_without_content_is_no_text(client: AsyncWebClient) -> None:
    error = await error_of(client.chat_postMessage(channel=CHANNEL, text=""))

    assert error.response["error"] == "no_text"


async def test_ephemeral_needs_member(slack: SlackStandin, client: AsyncWebClient) -> None:
    slack.add_channel("C0SMALL", members=["U0AAA"])
    posted = await client.chat_postEphemeral(channel="C0SMALL", user="U0AAA", text="only you")
    error = await error_of(client.chat_postEphemeral(channel="C0SMALL", user="U0BBB", text="not you"))

    assert [ephemeral.message_ts for ephemeral in slack.ephemerals("U0AAA")] == [posted["message_ts"]]
    assert error.response["error"] == "user_not_in_channel"
    assert slack.ephemerals("U0BBB") == []


async def test_permalink_of_message_and_reply(slack: SlackStandin, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel=CHANNEL, text="Runbook")
    reply = await client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="Step")

    parent_link = (await client.chat_getPermalink(channel=CHANNEL, message_ts=parent["ts"]))["permalink"]
    reply_link = (await client.chat_getPermalink(channel=CHANNEL, message_ts=reply["ts"]))["permalink"]
    missing = await error_of(client.chat_getPermalink(channel=CHANNEL, message_ts="1.000002"))

    assert parent_link == f"https://example.slack.com/archives/{CHANNEL}/p{parent['ts'].replace('.', '')}"
    assert reply_link.endswith(f"?thread_ts={parent['ts']}&cid={CHANNEL}")
    assert missing.response["error"] == "message_not_found"


# Authentication and channels


async def test_wrong_token_is_invalid_auth(slack: SlackStandin) -> None:
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=slack.base_url)

    error = await error_of(wrong.chat_postMessage(channel=CHANNEL, text="hi"))

    assert error.response["error"] == "invalid_auth"
    assert error.response.status_code == 200
    assert slack.messages(CHANNEL) == []


async def test_missing_token_is_not_authed(slack: SlackStandin) -> None:
    anonymous = AsyncWebClient(base_url=slack.base_url)

    error = await error_of(anonymous.auth_test())

    assert error.response["error"] == "not_authed"


async def test_revoked_token_fails_every_call(slack: SlackStandin, client: AsyncWebClient) -> None:
    slack.set_token_revoked()
    auth = await error_of(client.auth_test())
    post = await error_of(client.chat_postMessage(channel=CHANNEL, text="hi"))
    slack.set_token_revoked(False)

    assert auth.response["error"] == "invalid_auth"
    assert post.response["error"] == "invalid_auth"
    assert (await client.auth_test())["ok"] is True


async def test_auth_test_sends_scopes(client: AsyncWebClient) -> None:
    response = await client.auth_test()

    assert response["user_id"] == "U0BOT"
    assert response["team_id"] == "T0TEAM"
    assert "chat:write" in response.headers["x-oauth-scopes"]


async def test_missing_scope_names_it(slack: SlackStandin) -> None:
    async with SlackStandin(bot_token=TOKEN, users=["U0AAA"], scopes=["chat:write"]) as narrow:
        limited = AsyncWebClient(token=TOKEN, base_url=narrow.base_url)
        error = await error_of(limited.users_info(user="U0AAA"))

    assert error.response["error"] == "missing_scope"
    assert error.response["needed"] == "users:read"


async def test_unknown_channel_not_found(client: AsyncWebClient) -> None:
    error = await error_of(client.chat_postMessage(channel="C0NOPE", text="hi"))

    assert error.response["error"] == "channel_not_found"


async def test_private_channel_needs_membership(slack: SlackStandin, client: AsyncWebClient) -> None:
    slack.add_channel("G0SECRET", is_private=True, bot_is_member=False)
    slack.add_channel("C0PUBLIC", bot_is_member=False)

    private = await error_of(client.chat_postMessage(channel="G0SECRET", text="hi"))
    public = await client.chat_postMessage(channel="C0PUBLIC", text="hi")

    assert private.response["error"] == "not_in_channel"
    assert public["ok"] is True


async def test_user_id_posts_to_direct_message(slack: SlackStandin, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="U0AAA", text="Your rotation finished")

    assert posted["channel"] == "D0AAA"
    assert slack.messages("D0AAA")[0].text == "Your rotation finished"


async def test_join_public_channel(slack: SlackStandin, client: AsyncWebClient) -> None:
    slack.add_channel("C0OTHER", bot_is_member=False)
    slack.add_channel("G0PRIVATE", is_private=True, bot_is_member=False)

    first = await client.conversations_join(channel="C0OTHER")
    second = await client.conversations_join(channel="C0OTHER")
    private = await error_of(client.conversations_join(channel="G0PRIVATE"))

    assert "warning" not in first
    assert second["warning"] == "already_in_channel"
    assert private.response["error"] == "method_not_supported_for_channel_type"


async def test_users_and_usergroups(slack: SlackStandin, client: AsyncWebClient) -> None:
    slack.add_usergroup("S0APPROVERS", ["U0BBB", "U0CCC"])

    user = await client.users_info(user="U0AAA")
    group = await client.usergroups_users_list(usergroup="S0APPROVERS")
    missing_user = await error_of(client.users_info(user="U0NOPE"))
    missing_group = await error_of(client.usergroups_users_list(usergroup="S0NOPE"))

    assert user["user"]["id"] == "U0AAA"
    assert group["users"] == ["U0BBB", "U0CCC"]
    assert missing_user.response["error"] == "user_not_found"
    assert missing_group.response["error"] == "no_such_subteam"


async def test_every_response_is_json(slack: SlackStandin) -> None:
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.post(f"{slack.base_url}chat.postMessage") as unauthenticated:
            unauthenticated_type = unauthenticated.content_type
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.post(f"{slack.base_url}no.such.method", headers=headers) as unknown:
            unknown_body = await unknown.json()

    assert unauthenticated_type == "application/json"
    assert unknown_body["error"] == "unknown_method"


async def test_form_and_query_arguments(slack: SlackStandin) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    blocks = json.dumps([section("from a form")])
    async with aiohttp.ClientSession(trust_env=False) as session:
        form_post = await session.post(
            f"{slack.base_url}chat.postMessage",
            data={"channel": CHANNEL, "text": "form", "blocks": blocks},
            headers=headers,
        )
        form_body = await form_post.json()
        query_post = await session.post(
            f"{slack.base_url}chat.postMessage",
            params={"channel": CHANNEL, "text": "query", "team_id": "T0TEAM"},
            headers=headers,
        )
        query_body = await query_post.json()

    assert form_body["ok"] is True
    assert query_body["ok"] is True
    assert slack.messages(CHANNEL)[0].blocks[0]["text"]["text"] == "from a form"
    assert slack.calls_to("chat.postMessage")[1].args["team_id"] == "T0TEAM"


async def test_malformed_blocks_json(slack: SlackStandin) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(trust_env=False) as session:
        response = await session.post(
            f"{slack.base_url}chat.postMessage", data={"channel": CHANNEL, "blocks": "[{not json"}, headers=headers
        )
        body = await response.json()

    assert body["error"] == "invalid_blocks_format"


# Block Kit limits


def many(count: int, item: Any) -> list[Any]:
    return [item for _ in range(count)]


def long_id(length: int) -> str:
    return "a" * length


MESSAGE_BLOCK_VIOLATIONS = {
    "51 blocks": many(51, {"type": "divider"}),
    "section text 3001": [section("x" * 3001)],
    "section text empty": [section("")],
    "section without text": [{"type": "section"}],
    "11 fields": [{"type": "section", "fields": many(11, {"type": "mrkdwn", "text": "f"})}],
    "field 2001": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}],
    "header 151": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
    "header mrkdwn": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}],
    "26 actions": [{"type": "actions", "elements": [button(f"b{n}") for n in range(26)]}],
    "button text 76": [{"type": "actions", "elements": [button("approve", text="t" * 76)]}],
    "button value 2001": [{"type": "actions", "elements": [button("approve", value="v" * 2001)]}],
    "button mrkdwn text": [
        {"type": "actions", "elements": [{**button("approve"), "text": {"type": "mrkdwn", "text": "A"}}]}
    ],
    "action_id 256": [{"type": "actions", "elements": [button(long_id(256))]}],
    "duplicate action_id": [{"type": "actions", "elements": [button("same"), button("same")]}],
    "block_id 256": [section("s", block_id=long_id(256))],
    "duplicate block_id": [section("a", block_id="step"), section("b", block_id="step")],
    "context 11": [{"type": "context", "elements": many(11, {"type": "mrkdwn", "text": "c"})}],
    "unknown block type": [{"type": "carousel"}],
    "accessory unknown element": [section("s", accessory={"type": "slider", "action_id": "x"})],
}


@pytest.mark.parametrize("blocks", MESSAGE_BLOCK_VIOLATIONS.values(), ids=MESSAGE_BLOCK_VIOLATIONS.keys())
async def test_block_limit_is_invalid_blocks(slack: SlackStandin, client: AsyncWebClient, blocks: list[Any]) -> None:
    error = await error_of(client.chat_postMessage(channel=CHANNEL, text="fallback", blocks=blocks))

    assert error.response["error"] == "invalid_blocks"
    assert "[json-pointer:/blocks" in error.response["response_metadata"]["messages"][0]
    assert slack.messages(CHANNEL) == []


async def test_blocks_at_limits_accepted(client: AsyncWebClient) -> None:
    blocks = [
        section("x" * 3000, block_id=long_id(255)),
        {"type": "section", "fields": many(10, {"type": "mrkdwn", "text": "f" * 2000})},
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
        {"type": "actions", "elements": [button(f"b{n}", text="t" * 75, value="v" * 2000) for n in range(25)]},
        {"type": "context", "elements": many(10, {"type": "mrkdwn", "text": "c"})},
        *many(45, {"type": "divider"}),
    ]

    posted = await client.chat_postMessage(channel=CHANNEL, text="fallback", blocks=blocks)

    assert posted["ok"] is True


async def test_update_checks_blocks(client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="Runbook")

    error = await error_of(client.chat_update(channel=CHANNEL, ts=posted["ts"], blocks=[section("x" * 3001)]))

    assert error.response["error"] == "invalid_blocks"


VIEW_VIOLATIONS = {
    "title 25": modal(title={"type": "plain_text", "text": "t" * 25}),
    "submit 25": modal(submit={"type": "plain_text", "text": "s" * 25}),
    "close 25": modal(close={"type": "plain_text", "text": "c" * 25}),
    "private_metadata 3001": modal(private_metadata="m" * 3001),
    "101 blocks": modal(blocks=many(101, {"type": "divider"})),
    "input without submit": {key: value for key, value in modal().items() if key != "submit"},
    "section text 3001": modal(blocks=[section("x" * 3001)]),
}


@pytest.mark.parametrize("view", VIEW_VIOLATIONS.values(), ids=VIEW_VIOLATIONS.keys())
async def test_view_limit_is_rejected(slack: SlackStandin, client: AsyncWebClient, view: dict[str, Any]) -> None:
    error = await error_of(client.views_open(trigger_id=slack.new_trigger_id("U0AAA"), view=view))

    assert error.response["error"] == "invalid_arguments"
    assert "[json-pointer:/view" in error.response["response_metadata"]["messages"][0]
    assert slack.views() == []


async def test_home_allows_100_blocks(slack: SlackStandin, client: AsyncWebClient) -> None:
    home = {"type": "home", "blocks": many(100, {"type": "divider"})}

    published = await client.views_publish(user_id="U0AAA", view=home)
    crowded = {**home, "blocks": many(101, {"type": "divider"})}
    too_many = await error_of(client.views_publish(user_id="U0AAA", view=crowded))

    assert published["view"]["type"] == "home"
    assert too_many.response["error"] == "invalid_arguments"


# Faults and rate limits


async def test_rate_limit_retried_once(slack: SlackStandin) -> None:
    slack.rate_limit_next("chat.update", retry_after=1)
    retrying = AsyncWebClient(
        token=TOKEN, base_url=slack.base_url, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)]
    )
    posted = await retrying.chat_postMessage(channel=CHANNEL, text="Runbook")

    started = time.monotonic()
    await retrying.chat_update(channel=CHANNEL, ts=posted["ts"], text="Runbook v2")
    waited = time.monotonic() - started

    updates = slack.calls_to("chat.update")
    assert [call.status for call in updates] == [429, 200]
    assert updates[0].response == {"ok": False, "error": "ratelimited"}
    assert waited >= 1.0
    assert [message.text for message in slack.messages(CHANNEL)] == ["Runbook v2"]


async def test_rate_limit_stores_message_once(slack: SlackStandin) -> None:
    slack.rate_limit_next("chat.postMessage", retry_after=1)
    retrying = AsyncWebClient(
        token=TOKEN, base_url=slack.base_url, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)]
    )

    await retrying.chat_postMessage(channel=CHANNEL, text="Runbook")

    assert len(slack.calls_to("chat.postMessage")) == 2
    assert len(slack.messages(CHANNEL)) == 1


async def test_rate_limit_without_handler_raises(slack: SlackStandin, client: AsyncWebClient) -> None:
    slack.rate_limit_next("chat.postMessage", retry_after=7)

    error = await error_of(client.chat_postMessage(channel=CHANNEL, text="Runbook"))

    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "7"
    assert error.response["error"] == "ratelimited"


async def test_fail_next_counts_calls(slack: SlackStandin, client: AsyncWebClient) -> None:
    slack.fail_next("chat.postMessage", error="channel_not_found", times=2)

    first = await error_of(client.chat_postMessage(channel=CHANNEL, text="1"))
    second = await error_of(client.chat_postMessage(channel=CHANNEL, text="2"))
    third = await client.chat_postMessage(channel=CHANNEL, text="3")

    assert first.response["error"] == "channel_not_found"
    assert second.response["error"] == "channel_not_found"
    assert third["ok"] is True
    assert [message.text for message in slack.messages(CHANNEL)] == ["3"]


async def test_calls_are_recorded(slack: SlackStandin, client: AsyncWebClient) -> None:
    await client.auth_test()
    await client.chat_postMessage(channel=CHANNEL, text="hello")

    assert [call.method for call in slack.calls] == ["auth.test", "chat.postMessage"]
    assert slack.calls[1].args["text"] == "hello"
    assert slack.calls[1].headers["authorization"] == f"Bearer {TOKEN}"
    assert slack.calls[1].response["ok"] is True
    assert slack.calls[0].at <= slack.calls[1].at


# Views and trigger ids


async def test_trigger_id_single_use(slack: SlackStandin, client: AsyncWebClient) -> None:
    trigger_id = slack.new_trigger_id("U0AAA")

    opened = await client.views_open(trigger_id=trigger_id, view=modal())
    reused = await error_of(client.views_open(trigger_id=trigger_id, view=modal()))

    assert opened["view"]["callback_id"] == "rotate_reason"
    assert reused.response["error"] == "exchanged_trigger_id"
    assert [view.user for view in slack.views()] == ["U0AAA"]


async def test_trigger_id_expires() -> None:
    async with SlackStandin(bot_token=TOKEN, users=["U0AAA"], trigger_ttl=0.2) as slack:
        client = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
        trigger_id = slack.new_trigger_id("U0AAA")
        await asyncio.sleep(0.3)
        error = await error_of(client.views_open(trigger_id=trigger_id, view=modal()))

    assert error.response["error"] == "expired_trigger_id"


async def test_unknown_trigger_id_invalid(client: AsyncWebClient) -> None:
    error = await error_of(client.views_open(trigger_id="1.2.unknown", view=modal()))

    assert error.response["error"] == "invalid_trigger_id"


async def test_views_update_and_hash(slack: SlackStandin, client: AsyncWebClient) -> None:
    opened = (await client.views_open(trigger_id=slack.new_trigger_id("U0AAA"), view=modal()))["view"]

    updated = await client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal(private_metadata="run-7"))
    stale = await error_of(client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal()))
    missing = await error_of(client.views_update(view_id="V9999999999", view=modal()))

    assert updated["view"]["private_metadata"] == "run-7"
    assert stale.response["error"] == "hash_conflict"
    assert missing.response["error"] == "not_found"


async def test_publish_hash_conflict(slack: SlackStandin, client: AsyncWebClient) -> None:
    home = {"type": "home", "blocks": [section("Rotations")]}
    first = (await client.views_publish(user_id="U0AAA", view=home))["view"]
    await client.views_publish(user_id="U0AAA", view=home, hash=first["hash"])

    conflict = await error_of(client.views_publish(user_id="U0AAA", view=home, hash=first["hash"]))

    assert conflict.response["error"] == "hash_conflict"
    assert slack.home_view("U0AAA").blocks[0]["text"]["text"] == "Rotations"  # type: ignore[union-attr]


# response_url


async def test_response_url_use_limit(slack: SlackStandin) -> None:
    url = slack.new_response_url(channel=CHANNEL, user="U0AAA")
    statuses = []
    async with aiohttp.ClientSession(trust_env=False) as session:
        for attempt in range(6):
            async with session.post(url, json={"text": f"update {attempt}"}) as response:
                statuses.append(response.status)
                last_body = await response.json()

    assert statuses == [200, 200, 200, 200, 200, 404]
    assert last_body["error"] == "used_url"
    assert len(slack.ephemerals("U0AAA")) == 5
    assert len(slack.calls_to("response_url")) == 6


async def test_response_url_expires() -> None:
    async with SlackStandin(bot_token=TOKEN, users=["U0AAA"], response_url_ttl=0.2) as slack:
        url = slack.new_response_url(channel=CHANNEL, user="U0AAA")
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession(trust_env=False) as session:
            async with session.post(url, json={"text": "late"}) as response:
                status = response.status
                body = await response.json()

    assert status == 404
    assert body["error"] == "expired_url"


async def test_response_url_changes_state(slack: SlackStandin, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="Approve?", blocks=[section("Approve?")])
    replace_url = slack.new_response_url(channel=CHANNEL, user="U0BBB", original_ts=posted["ts"])
    command_url = slack.new_response_url(channel=CHANNEL, user="U0AAA")
    async with aiohttp.ClientSession(trust_env=False) as session:
        await session.post(replace_url, json={"replace_original": True, "text": "Approved"})
        await session.post(command_url, json={"response_type": "in_channel", "text": "Starting rotation"})
        await session.post(command_url, json={"text": "Only you see this"})

    assert slack.message(CHANNEL, posted["ts"]).text == "Approved"  # type: ignore[union-attr]
    assert slack.message(CHANNEL, posted["ts"]).blocks == []  # type: ignore[union-attr]
    assert [message.text for message in slack.messages(CHANNEL)] == ["Approved", "Starting rotation"]
    assert [ephemeral.text for ephemeral in slack.ephemerals("U0AAA")] == ["Only you see this"]


async def test_delete_original_removes_message(slack: SlackStandin, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="Approve?")
    url = slack.new_response_url(channel=CHANNEL, user="U0BBB", original_ts=posted["ts"])
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.post(url, json={"delete_original": True, "text": ""}) as response:
            status = response.status

    assert status == 200
    assert slack.messages(CHANNEL) == []
    assert slack.message(CHANNEL, posted["ts"]) is None


async def test_response_url_checks_blocks(slack: SlackStandin) -> None:
    url = slack.new_response_url(channel=CHANNEL, user="U0AAA")
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.post(url, json={"text": "x", "blocks": [section("x" * 3001)]}) as response:
            status = response.status
            body = await response.json()

    assert status == 400
    assert body["error"] == "invalid_blocks"
    assert slack.ephemerals() == []


# View acknowledgements


async def test_view_acknowledgement_actions(slack: SlackStandin, client: AsyncWebClient) -> None:
    view_id = (await client.views_open(trigger_id=slack.new_trigger_id("U0AAA"), view=modal()))["view"]["id"]

    update = {"response_action": "update", "view": modal(private_metadata="step-2")}
    slack.apply_view_response(view_id, status=200, body=json.dumps(update))
    updated_metadata = slack.view(view_id).private_metadata  # type: ignore[union-attr]
    push = {"response_action": "push", "view": modal(callback_id="confirm")}
    slack.apply_view_response(view_id, status=200, body=json.dumps(push))
    stack = [view.callback_id for view in slack.views("U0AAA")]
    slack.apply_view_response(view_id, status=200, body=json.dumps({"response_action": "clear"}))

    assert updated_metadata == "step-2"
    assert stack == ["rotate_reason", "confirm"]
    assert slack.views() == []


async def test_bad_view_acknowledgement_recorded(slack: SlackStandin, client: AsyncWebClient) -> None:
    view_id = (await client.views_open(trigger_id=slack.new_trigger_id("U0AAA"), view=modal()))["view"]["id"]
    too_long_title = modal(title={"type": "plain_text", "text": "t" * 25})

    slack.apply_view_response(view_id, status=200, body="Thanks!")
    rejected_update = {"response_action": "update", "view": too_long_title}
    slack.apply_view_response(view_id, status=200, body=json.dumps(rejected_update))

    assert len(slack.view_response_problems) == 2
    assert "not JSON" in slack.view_response_problems[0]
    assert "json-pointer:/view/title/text" in slack.view_response_problems[1]
    assert slack.views()[0].content["title"]["text"] == "Rotate secret"


# wait_for


async def test_wait_for_returns_value(slack: SlackStandin, client: AsyncWebClient) -> None:
    async def post_later() -> None:
        await asyncio.sleep(0.1)
        await client.chat_postMessage(channel=CHANNEL, text="late")

    task = asyncio.create_task(post_later())
    messages = await slack.wait_for(lambda s: s.messages(CHANNEL), timeout=5)
    await task

    assert messages[0].text == "late"


async def test_wait_for_times_out(slack: SlackStandin) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="runbook posted"):
        await slack.wait_for(lambda: slack.messages(CHANNEL), timeout=0.2, description="runbook posted")

    assert time.monotonic() - started < 2


# Driver: signatures and bytes on the wire


class Recorder:
    """An HTTP endpoint on 127.0.0.1 that stores each raw request and responds 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((await request.read(), dict(request.headers)))
        return web.Response(status=200)


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/slack/events", recorder.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield recorder, f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    await runner.cleanup()


async def test_driver_signature_verifies(slack: SlackStandin, recorder: tuple[Recorder, str]) -> None:
    endpoint, url = recorder
    driver = SlackDriver(bot_url=url, signing_secret=SIGNING_SECRET, slack=slack)

    response = await driver.slash_command("rotate JWT_SECRET", user_id="U0AAA", channel_id=CHANNEL)
    body, headers = endpoint.requests[0]

    assert response.status == 200
    assert SignatureVerifier(SIGNING_SECRET).is_valid_request(body, headers) is True


async def test_stale_timestamp_fails_verification(slack: SlackStandin, recorder: tuple[Recorder, str]) -> None:
    endpoint, url = recorder
    driver = SlackDriver(bot_url=url, signing_secret=SIGNING_SECRET, slack=slack)

    stale = int(time.time()) - 301
    await driver.slash_command("rotate JWT_SECRET", user_id="U0AAA", channel_id=CHANNEL, timestamp=stale)
    body, headers = endpoint.requests[0]

    assert SignatureVerifier(SIGNING_SECRET).is_valid_request(body, headers) is False


async def test_bad_and_missing_signatures(slack: SlackStandin, recorder: tuple[Recorder, str]) -> None:
    endpoint, url = recorder
    driver = SlackDriver(bot_url=url, signing_secret=SIGNING_SECRET, slack=slack)

    await driver.slash_command("rotate JWT_SECRET", user_id="U0AAA", channel_id=CHANNEL, signature="v0=" + "0" * 64)
    await driver.slash_command("rotate JWT_SECRET", user_id="U0AAA", channel_id=CHANNEL, sign=False)
    verifier = SignatureVerifier(SIGNING_SECRET)

    assert verifier.is_valid_request(*endpoint.requests[0]) is False
    assert "X-Slack-Signature" not in endpoint.requests[1][1]
    assert "X-Slack-Request-Timestamp" not in endpoint.requests[1][1]


async def test_command_body_sent_unchanged(slack: SlackStandin, recorder: tuple[Recorder, str]) -> None:
    endpoint, url = recorder
    driver = SlackDriver(bot_url=url, signing_secret=SIGNING_SECRET, slack=slack)
    text = "rotate webhook_payload_key a&b=c+d %41 ü"

    response = await driver.slash_command(text, user_id="U0AAA", channel_id=CHANNEL)
    body, headers = endpoint.requests[0]
    fields = parse_qs(body.decode(), keep_blank_values=True)

    assert body.decode() == urlencode(response.payload)
    assert fields["text"] == [text]
    assert fields["command"] == ["/secret"]
    assert fields["is_enterprise_install"] == ["false"]
    assert fields["response_url"][0].startswith(slack.root_url + "/response/")
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"


async def test_click_builds_block_actions(
    slack: SlackStandin, client: AsyncWebClient, recorder: tuple[Recorder, str]
) -> None:
    endpoint, url = recorder
    driver = SlackDriver(bot_url=url, signing_secret=SIGNING_SECRET, slack=slack)
    parent = await client.chat_postMessage(channel=CHANNEL, text="Runbook")
    blocks = [section("Approve?"), {"type": "actions", "block_id": "decide", "elements": [button("run_approve")]}]
    reply = await client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="Approve?", blocks=blocks)

    await driver.click(channel=CHANNEL, ts=reply["ts"], action_id="run_approve", user_id="U0BBB")
    payload = json.loads(parse_qs(endpoint.requests[0][0].decode())["payload"][0])

    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == "U0BBB"
    assert payload["container"]["thread_ts"] == parent["ts"]
    assert payload["container"]["is_ephemeral"] is False
    assert payload["actions"][0]["block_id"] == "decide"
    assert payload["actions"][0]["value"] == "run-1"
    assert payload["message"]["blocks"][1]["elements"][0]["action_id"] == "run_approve"
    assert payload["trigger_id"] in slack.workspace.trigger_ids


async def test_click_forged_value(slack: SlackStandin, client: AsyncWebClient, recorder: tuple[Recorder, str]) -> None:
    endpoint, url = recorder
    driver = SlackDriver(bot_url=url, signing_secret=SIGNING_SECRET, slack=slack)
    posted = await client.chat_postMessage(
        channel=CHANNEL, text="Approve?", blocks=[section("Approve?", accessory=button("run_approve"))]
    )

    response = await driver.click(
        channel=CHANNEL, ts=posted["ts"], action_id="run_approve", user_id="U0BBB", value="run-999"
    )

    assert response.payload["actions"][0]["value"] == "run-999"


async def test_click_missing_button_lists_buttons(slack: SlackStandin, client: AsyncWebClient) -> None:
    driver = SlackDriver(bot_url="http://127.0.0.1:9/unused", signing_secret=SIGNING_SECRET, slack=slack)
    blocks = [{"type": "actions", "elements": [button("run_approve"), button("run_reject", text="Reject")]}]
    posted = await client.chat_postMessage(channel=CHANNEL, text="Approve?", blocks=blocks)

    with pytest.raises(LookupError, match="run_cancel.*run_approve.*run_reject"):
        await driver.click(channel=CHANNEL, ts=posted["ts"], action_id="run_cancel", user_id="U0BBB")


async def test_click_ephemeral_then_replace(
    slack: SlackStandin, client: AsyncWebClient, recorder: tuple[Recorder, str]
) -> None:
    endpoint, url = recorder
    driver = SlackDriver(bot_url=url, signing_secret=SIGNING_SECRET, slack=slack)
    blocks = [{"type": "actions", "elements": [button("run_cancel", text="Cancel")]}]
    posted = await client.chat_postEphemeral(channel=CHANNEL, user="U0AAA", text="Cancel?", blocks=blocks)

    response = await driver.click(channel=CHANNEL, ts=posted["message_ts"], action_id="run_cancel", user_id="U0AAA")
    async with aiohttp.ClientSession(trust_env=False) as session:
        await session.post(response.payload["response_url"], json={"replace_original": True, "text": "Cancelled"})

    assert response.payload["container"]["is_ephemeral"] is True
    assert [ephemeral.text for ephemeral in slack.ephemerals("U0AAA")] == ["Cancelled"]


async def test_click_home_tab_button(
    slack: SlackStandin, client: AsyncWebClient, recorder: tuple[Recorder, str]
) -> None:
    endpoint, url = recorder
    driver = SlackDriver(bot_url=url, signing_secret=SIGNING_SECRET, slack=slack)
    home = {"type": "home", "blocks": [section("Rotations", accessory=button("home_refresh", text="Refresh"))]}
    view_id = (await client.views_publish(user_id="U0AAA", view=home))["view"]["id"]

    response = await driver.click_view(view_id=view_id, action_id="home_refresh", user_id="U0AAA")

    assert response.payload["container"] == {"type": "view", "view_id": view_id}
    assert response.payload["view"]["type"] == "home"
    assert response.payload["actions"][0]["action_id"] == "home_refresh"
    assert len(endpoint.requests) == 1


async def test_submit_view_fills_state(
    slack: SlackStandin, client: AsyncWebClient, recorder: tuple[Recorder, str]
) -> None:
    endpoint, url = recorder
    driver = SlackDriver(bot_url=url, signing_secret=SIGNING_SECRET, slack=slack)
    approver_input = {
        "type": "input",
        "block_id": "approver",
        "label": {"type": "plain_text", "text": "Approver"},
        "element": {"type": "users_select", "action_id": "approver_user"},
    }
    view = modal(blocks=[*modal()["blocks"], approver_input])
    view_id = (await client.views_open(trigger_id=slack.new_trigger_id("U0AAA"), view=view))["view"]["id"]

    values = {"approver": {"approver_user": "U0BBB"}}
    response = await driver.submit_view(view_id=view_id, user_id="U0AAA", values=values)
    state = response.payload["view"]["state"]["values"]

    assert state["approver"]["approver_user"] == {"type": "users_select", "selected_user": "U0BBB"}
    assert state["reason"]["reason_text"] == {"type": "plain_text_input", "value": None}
    assert slack.views() == []


async def test_submit_unknown_input_lists_inputs(slack: SlackStandin, client: AsyncWebClient) -> None:
    driver = SlackDriver(bot_url="http://127.0.0.1:9/unused", signing_secret=SIGNING_SECRET, slack=slack)
    view_id = (await client.views_open(trigger_id=slack.new_trigger_id("U0AAA"), view=modal()))["view"]["id"]

    with pytest.raises(LookupError, match="reason/reason_text"):
        await driver.submit_view(view_id=view_id, user_id="U0AAA", values={"why": {"why_text": "x"}})


# Driver against a real bolt app


@pytest.fixture
async def bolt_url(slack: SlackStandin) -> AsyncIterator[str]:
    app = AsyncApp(signing_secret=SIGNING_SECRET, client=AsyncWebClient(token=TOKEN, base_url=slack.base_url))

    @app.command("/secret")
    async def start_runbook(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await client.chat_postMessage(
            channel=body["channel_id"],
            text=f"Runbook: {body['text']}",
            blocks=[section(f"Runbook: {body['text']}"), {"type": "actions", "elements": [button("run_approve")]}],
        )

    @app.action("run_approve")
    async def approve(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await client.chat_postMessage(
            channel=body["channel"]["id"],
            thread_ts=body["container"]["message_ts"],
            text=f"Approved by {body['user']['id']} for {body['actions'][0]['value']}",
        )

    @app.view("rotate_reason")
    async def reason_submitted(ack: Any, view: dict[str, Any]) -> None:
        reason = view["state"]["values"]["reason"]["reason_text"]["value"]
        if not reason:
            await ack(response_action="errors", errors={"reason": "A reason is required."})
            return
        await ack()

    @app.event("app_home_opened")
    async def publish_home(event: dict[str, Any], client: AsyncWebClient) -> None:
        await client.views_publish(user_id=event["user"], view={"type": "home", "blocks": [section("Rotations")]})

    runner = web.AppRunner(app.web_app(path="/slack/events"), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    await runner.cleanup()


async def test_bolt_runs_command_and_click(slack: SlackStandin, bolt_url: str) -> None:
    driver = SlackDriver(bot_url=bolt_url, signing_secret=SIGNING_SECRET, slack=slack)

    command = await driver.slash_command("rotate JWT_SECRET", user_id="U0AAA", channel_id=CHANNEL)
    runbook = (await slack.wait_for(lambda s: s.messages(CHANNEL), timeout=5))[0]
    click = await driver.click(channel=CHANNEL, ts=runbook.ts, action_id="run_approve", user_id="U0BBB")
    replies = await slack.wait_for(lambda s: s.replies(CHANNEL, runbook.ts), timeout=5)

    assert command.status == 200
    assert command.elapsed < 3
    assert runbook.text == "Runbook: rotate JWT_SECRET"
    assert click.status == 200
    assert replies[0].text == "Approved by U0BBB for run-1"


async def test_bolt_rejects_stale_request(slack: SlackStandin, bolt_url: str) -> None:
    driver = SlackDriver(bot_url=bolt_url, signing_secret=SIGNING_SECRET, slack=slack)

    stale_timestamp = int(time.time()) - 301
    stale = await driver.slash_command(
        "rotate JWT_SECRET", user_id="U0AAA", channel_id=CHANNEL, timestamp=stale_timestamp
    )
    forged = await driver.slash_command("rotate JWT_SECRET", user_id="U0AAA", channel_id=CHANNEL, signature="v0=00")

    assert stale.status == 401
    assert forged.status == 401
    assert slack.calls_to("chat.postMessage") == []


async def test_bolt_view_submission(slack: SlackStandin, client: AsyncWebClient, bolt_url: str) -> None:
    driver = SlackDriver(bot_url=bolt_url, signing_secret=SIGNING_SECRET, slack=slack)
    view_id = (await client.views_open(trigger_id=slack.new_trigger_id("U0AAA"), view=modal()))["view"]["id"]

    empty = await driver.submit_view(view_id=view_id, user_id="U0AAA", values={})
    errors_shown = slack.view(view_id).errors  # type: ignore[union-attr]
    filled = await driver.submit_view(view_id=view_id, user_id="U0AAA", values={"reason": {"reason_text": "leaked"}})

    assert empty.json() == {"response_action": "errors", "errors": {"reason": "A reason is required."}}
    assert errors_shown == {"reason": "A reason is required."}
    assert filled.status == 200
    assert slack.views() == []


async def test_bolt_event_publishes_home(slack: SlackStandin, bolt_url: str) -> None:
    driver = SlackDriver(bot_url=bolt_url, signing_secret=SIGNING_SECRET, slack=slack)

    first = await driver.event({"type": "app_home_opened", "user": "U0AAA", "channel": "D0AAA", "tab": "home"})
    retry = await driver.event(
        {"type": "app_home_opened", "user": "U0AAA", "channel": "D0AAA", "tab": "home"},
        retry_num=1,
        event_id=first.payload["event_id"],
    )
    home = await slack.wait_for(lambda s: s.home_view("U0AAA"), timeout=5)

    assert first.status == 200
    assert retry.status == 200
    assert home.blocks[0]["text"]["text"] == "Rotations"


# Separate process


async def test_cli_serves_and_writes_state(tmp_path: Path) -> None:
    state_file = tmp_path / "slack-state.json"
    repository = Path(__file__).resolve().parents[2]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.standins.slack_cli",
        "--port",
        "0",
        "--state-out",
        str(state_file),
        "--max-seconds",
        "30",
        cwd=repository,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first_line = (await asyncio.wait_for(process.stdout.readline(), timeout=10)).decode()
        base_url = first_line.strip().removeprefix("SLACK_API_URL=")
        posted = await AsyncWebClient(token=TOKEN, base_url=base_url).chat_postMessage(channel=CHANNEL, text="hi")
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    state = json.loads(state_file.read_text())

    assert first_line.startswith("SLACK_API_URL=http://127.0.0.1:")
    assert exit_code == 0
    assert state["messages"][CHANNEL][0]["ts"] == posted["ts"]
    assert [call["method"] for call in state["calls"]] == ["chat.postMessage"]
