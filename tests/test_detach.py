"""respond_at_ack: bolt (process_before_response=True) sends the response at the listener's ack
while its work goes on, failures before the ack still reach bolt, and failures after it are logged."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.util.utils import get_arg_names_of_callable

from handlers import detach
from handlers.detach import check_every_listener_detached, respond_at_ack
from handlers.turns import AfterAckTurns


async def _authorize(**_: Any) -> AuthorizeResult:
    return AuthorizeResult(enterprise_id=None, team_id="T0TEST", bot_token="xoxb-detach-test",
                           bot_user_id="U0BOT", bot_id="B0BOT")


def _app() -> AsyncApp:
    # The settings handlers/slack_app.py gives bolt, without a Slack client.
    return AsyncApp(authorize=_authorize, request_verification_enabled=False, process_before_response=True)


def _command(text: str) -> AsyncBoltRequest:
    body = urlencode({"command": "/secret", "text": text, "team_id": "T0TEST", "user_id": "U0USER",
                      "channel_id": "C0CHAN", "response_url": "http://127.0.0.1:9/unused", "trigger_id": "1.2.x"})
    return AsyncBoltRequest(body=body, headers={"content-type": ["application/x-www-form-urlencoded"]})


def _event() -> AsyncBoltRequest:
    body = ('{"type": "event_callback", "team_id": "T0TEST", "event_id": "Ev0DETACH", '
            '"event": {"type": "app_home_opened", "user": "U0USER", "tab": "home"}}')
    return AsyncBoltRequest(body=body, headers={"content-type": ["application/json"]})


async def test_response_sent_at_ack() -> None:
    app = _app()
    release = asyncio.Event()
    finished: list[str] = []

    @app.command("/secret")
    @respond_at_ack
    async def command(ack: Any, command: dict[str, Any]) -> None:
        await ack(response_type="ephemeral", text=f"starting {command['text']}")
        await release.wait()
        finished.append(command["text"])

    started = time.monotonic()
    response = await asyncio.wait_for(app.async_dispatch(_command("rotate JWT_SECRET")), 2)
    assert time.monotonic() - started < 1
    assert response.status == 200
    assert "starting rotate JWT_SECRET" in response.body
    assert finished == []
    release.set()
    for _ in range(100):
        if finished:
            break
        await asyncio.sleep(0.01)
    assert finished == ["rotate JWT_SECRET"]


async def test_bolt_alone_waits_for_listener_end() -> None:
    # What respond_at_ack is for: with these settings bolt awaits the whole listener.
    app = _app()
    release = asyncio.Event()

    @app.command("/secret")
    async def command(ack: Any) -> None:
        await ack(text="starting")
        await release.wait()

    dispatch = asyncio.create_task(app.async_dispatch(_command("status")))
    await asyncio.sleep(0.2)
    assert not dispatch.done()
    release.set()
    await asyncio.wait_for(dispatch, 2)


async def test_failure_before_ack_gets_500() -> None:
    app = _app()

    @app.command("/secret")
    @respond_at_ack
    async def command(ack: Any) -> None:
        raise RuntimeError("failed before its ack")

    response = await asyncio.wait_for(app.async_dispatch(_command("status")), 2)
    assert response.status == 500


async def test_failure_right_after_ack_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()

    @app.command("/secret")
    @respond_at_ack
    async def command(ack: Any) -> None:
        await ack(text="starting")
        raise RuntimeError("failed after its ack")

    with caplog.at_level(logging.ERROR, logger="handlers.detach"):
        response = await asyncio.wait_for(app.async_dispatch(_command("status")), 2)
        await asyncio.sleep(0.05)
    assert response.status == 200
    assert "starting" in response.body
    failures = [record for record in caplog.records if record.name == "handlers.detach"]
    assert len(failures) == 1
    assert "command failed after its acknowledgement (RuntimeError)" in failures[0].getMessage()


async def test_later_failure_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    fail = asyncio.Event()

    @app.command("/secret")
    @respond_at_ack
    async def command(ack: Any) -> None:
        await ack(text="starting")
        await fail.wait()
        raise ValueError("failed later")

    with caplog.at_level(logging.ERROR, logger="handlers.detach"):
        response = await asyncio.wait_for(app.async_dispatch(_command("status")), 2)
        assert response.status == 200
        fail.set()
        await asyncio.sleep(0.05)
    assert any("failed after its acknowledgement (ValueError)" in record.getMessage() for record in caplog.records)


async def test_event_listener_returns_at_once() -> None:
    app = _app()
    release = asyncio.Event()
    seen: list[str] = []

    @app.event("app_home_opened")
    @respond_at_ack
    async def home_opened(event: dict[str, Any]) -> None:
        await release.wait()
        seen.append(str(event["user"]))

    response = await asyncio.wait_for(app.async_dispatch(_event()), 2)
    assert response.status == 200
    assert seen == []
    release.set()
    await asyncio.sleep(0.05)
    assert seen == ["U0USER"]


async def test_listener_without_ack_times_out(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(detach, "ACK_WAIT_SECONDS", 0.1)
    never = asyncio.Event()

    @respond_at_ack
    async def silent(ack: Any) -> None:
        await never.wait()

    with caplog.at_level(logging.WARNING, logger="handlers.detach"):
        assert await asyncio.wait_for(silent(ack=_RecordingAck()), 2) is None
    assert any("timed out: no ack" in record.getMessage() for record in caplog.records)
    leftover = [task for task in detach._running if task.get_name() == "listener silent"]
    assert len(leftover) == 1
    leftover[0].cancel()


async def test_drain_waits_for_detached_work() -> None:
    # The turn wrapper tracks the task its listener runs in, which is now respond_at_ack's task.
    # A drain at shutdown must still wait for work that was acknowledged.
    turns = AfterAckTurns(limit=1, hold_seconds=30)
    done: list[str] = []

    @respond_at_ack
    @turns
    async def listener(ack: Any) -> None:
        await ack()
        await asyncio.sleep(0.1)
        done.append("work")

    await listener(ack=_RecordingAck())
    assert done == []
    await turns.drain(timeout=5)
    assert done == ["work"]


def test_bolt_reads_arguments_through_wrappers() -> None:
    turns = AfterAckTurns(limit=1)

    async def listener(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()

    assert get_arg_names_of_callable(respond_at_ack(turns(listener))) == ["ack", "body", "respond"]


def test_app_check_rejects_unwrapped_listener() -> None:
    app = _app()

    @app.command("/secret")
    @respond_at_ack
    async def command(ack: Any) -> None:
        await ack()

    check_every_listener_detached(app)

    @app.action("plain_button")
    async def plain_button(ack: Any) -> None:
        await ack()

    with pytest.raises(RuntimeError, match="plain_button lack @respond_at_ack"):
        check_every_listener_detached(app)


class _RecordingAck:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, **options: Any) -> None:
        self.calls.append(options)
