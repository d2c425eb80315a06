"""Block Kit messages built from run snapshots: Slack's limits, escaping and buttons."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.runbook.steps import Action
from bot.runbook.views import RunView, SecretView, StepView
from handlers import messages

RUN_ID = "a1b2c3d4e5f6"
REQUESTER = "U0AAA"
APPROVER = "U0BBB"
APPROVE = Action("approve", "Approve", "primary")
DENY = Action("deny", "Deny", "danger")
DONE = Action("done", "Done", "primary")

# Slack's published Block Kit limits, checked here independently of the module's constants.
MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION = 3000
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTION_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ID = 255
# chat.update rejects top-level text over 4,000 characters with msg_too_long.
MAX_TEXT = 4000

LONG = 10_000
HOSTILE = "<!channel> <!here|here> <@U0EVIL> <https://evil.example|click> & done"


def step(
    position: int,
    *,
    kind: str = "generate",
    title: str | None = None,
    status: str = "pending",
    detail: str | None = None,
    actor: str | None = None,
    actions: tuple[Action, ...] = (),
    allowed_users: tuple[str, ...] = (),
    decisions: tuple[tuple[str, str], ...] = (),
) -> StepView:
    return StepView(
        position=position,
        kind=kind,
        title=title or f"Step number {position + 1}",
        status=status,
        detail=detail,
        actor=actor,
        actions=actions,
        allowed_users=allowed_users,
        decisions=decisions,
    )


def approval(
    position: int = 0, *, status: str = "waiting", allowed_users: tuple[str, ...] = (APPROVER,), **fields: Any
) -> StepView:
    return step(
        position,
        kind="approval",
        title="Approve the rotation",
        status=status,
        actions=(APPROVE, DENY),
        allowed_users=allowed_users,
        **fields,
    )


def run_view(
    steps: tuple[StepView, ...],
    *,
    status: str = "waiting",
    reason: str | None = "scheduled rotation",
    outcome: str | None = None,
    names: tuple[str, ...] = ("JWT_SECRET",),
) -> RunView:
    created = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    finished = status in ("succeeded", "failed", "denied", "cancelled")
    return RunView(
        id=RUN_ID,
        kind="rotate",
        title="Rotate",
        app="hotel-voice-bot",
        requester=REQUESTER,
        reason=reason,
        status=status,
        current_step=next((s.position for s in steps if s.status in ("running", "waiting")), 0),
        outcome=outcome,
        secrets=tuple(SecretView(name=name, digest_before="ab12cd", digest_after=None) for name in names),
        steps=steps,
        created_at=created,
        finished_at=created + timedelta(minutes=3, seconds=7) if finished else None,
    )


def waiting_run(**fields: Any) -> RunView:
    steps = (approval(0), step(1, title="Generate the new value"), step(2, title="Update Fly"))
    return run_view(steps, **fields)


def texts_of(blocks: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for block in blocks:
        if "text" in block:
            found.append(block["text"]["text"])
        for element in block.get("elements", []):
            if isinstance(element.get("text"), dict):
                found.append(element["text"]["text"])
            elif isinstance(element.get("text"), str):
                found.append(element["text"])
    return found


def limit_problems(text: str, blocks: list[dict[str, Any]]) -> list[str]:
    """Return every Block Kit limit the message breaks, empty when it is within all of them."""
    problems: list[str] = []
    if len(text) > MAX_TEXT:
        problems.append(f"text is {len(text)} characters")
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks")

    block_ids = [block["block_id"] for block in blocks if "block_id" in block]
    if len(block_ids) != len(set(block_ids)):
        problems.append(f"duplicate block_id in {block_ids}")
    problems += [f"block_id {block_id!r} too long" for block_id in block_ids if len(block_id) > MAX_ID]

    for index, block in enumerate(blocks):
        kind = block["type"]
        if kind == "header":
            header = block["text"]["text"]
            if block["text"]["type"] != "plain_text" or not 1 <= len(header) <= MAX_HEADER:
                problems.append(f"block {index}: header of {len(header)} characters")
        elif kind == "section":
            body = block["text"]["text"]
            if not 1 <= len(body) <= MAX_SECTION:
                problems.append(f"block {index}: section text of {len(body)} characters")
        elif kind == "context":
            elements = block["elements"]
            if not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
                problems.append(f"block {index}: {len(elements)} context elements")
            problems += [
                f"block {index}: context text of {len(element['text'])} characters"
                for element in elements
                if not 1 <= len(element["text"]) <= MAX_SECTION
            ]
        elif kind == "actions":
            elements = block["elements"]
            if not 1 <= len(elements) <= MAX_ACTION_ELEMENTS:
                problems.append(f"block {index}: {len(elements)} action elements")
            for button in elements:
                if len(button["text"]["text"]) > MAX_BUTTON_TEXT:
                    problems.append(f"block {index}: button text too long")
                if len(button["value"]) > MAX_BUTTON_VALUE:
                    problems.append(f"block {index}: button value too long")
                if len(button["action_id"]) > MAX_ID:
                    problems.append(f"block {index}: action_id too long")
                if button.get("style") not in (None, "primary", "danger"):
                    problems.append(f"block {index}: button style {button.get('style')!r}")
        else:
            problems.append(f"block {index}: unexpected type {kind!r}")
    return problems


def actions_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [block for block in blocks if block["type"] == "actions"]


# --- buttons ----------------------------------------------------------------------------------


def test_waiting_approval_has_two_buttons() -> None:
    _, blocks = messages.parent_message(waiting_run())
    [actions] = actions_blocks(blocks)
    buttons = actions["elements"]
    assert [button["action_id"] for button in buttons] == ["step_approve", "step_deny"]
    assert [button["value"] for button in buttons] == [f"{RUN_ID}:0", f"{RUN_ID}:0"]
    assert [button["style"] for button in buttons] == ["primary", "danger"]
    assert [button["text"]["text"] for button in buttons] == ["Approve", "Deny"]


def test_waiting_manual_step_has_done_button() -> None:
    steps = (
        approval(0, status="done", actor=APPROVER),
        step(1, status="done", detail="new value made"),
        step(2, kind="external", title="Update Supabase", status="waiting", actions=(DONE,), allowed_users=(REQUESTER,)),
    )
    _, blocks = messages.parent_message(run_view(steps))
    [actions] = actions_blocks(blocks)
    assert [button["action_id"] for button in actions["elements"]] == ["step_done"]
    assert actions["elements"][0]["value"] == f"{RUN_ID}:2"


def test_button_action_ids_have_handlers() -> None:
    _, blocks = messages.parent_message(waiting_run())
    handled = {"step_approve", "step_deny", "step_done"}
    for block in actions_blocks(blocks):
        for button in block["elements"]:
            assert button["action_id"] in handled


def test_waiting_step_names_who_can_answer() -> None:
    _, blocks = messages.parent_message(waiting_run())
    assert any(f"<@{APPROVER}>" in text for text in texts_of(blocks))


@pytest.mark.parametrize("status", ["succeeded", "denied"])
def test_finished_run_has_no_buttons(status: str) -> None:
    # A step can still read "waiting" if the run was stopped while it waited.
    _, blocks = messages.parent_message(waiting_run(status=status, outcome="stopped"))
    assert actions_blocks(blocks) == []


@pytest.mark.parametrize("status", ["failed", "expired", "cancelled"])
def test_stopped_run_offers_only_retry(status: str) -> None:
    _, blocks = messages.parent_message(waiting_run(status=status, outcome="stopped"))
    buttons = [button["action_id"] for block in actions_blocks(blocks) for button in block["elements"]]
    assert buttons == [messages.RETRY_ACTION_ID]


def test_running_run_has_no_buttons() -> None:
    steps = (approval(0, status="done", actor=APPROVER), step(1, status="running"), step(2))
    _, blocks = messages.parent_message(run_view(steps, status="running"))
    assert actions_blocks(blocks) == []


def test_waiting_step_without_actions_has_no_buttons() -> None:
    steps = (step(0, status="waiting"), step(1))
    _, blocks = messages.parent_message(run_view(steps))
    assert actions_blocks(blocks) == []


def test_rerender_gets_new_block_id() -> None:
    _, first = messages.parent_message(waiting_run())
    _, second = messages.parent_message(waiting_run())
    assert actions_blocks(first)[0]["block_id"] != actions_blocks(second)[0]["block_id"]


# --- checklist and outcome -------------------------------------------------------------------


def test_finished_run_marks_unrun_steps() -> None:
    steps = (approval(0, status="failed", actor=APPROVER, detail="denied"), step(1), step(2))
    _, blocks = messages.parent_message(run_view(steps, status="denied", outcome="Denied by approver"))
    checklist = blocks[2]["text"]["text"]
    assert checklist.count("(not run)") == 2


def test_done_step_shows_actor_and_detail() -> None:
    steps = (approval(0, status="done", actor=APPROVER, detail="approved\nsecond line"), step(1, status="running"))
    _, blocks = messages.parent_message(run_view(steps, status="running"))
    checklist = blocks[2]["text"]["text"]
    assert f"<@{APPROVER}>" in checklist
    assert "approved" in checklist
    assert "second line" not in checklist


def test_outcome_shown_when_finished() -> None:
    steps = (approval(0, status="done", actor=APPROVER), step(1, status="done"))
    _, blocks = messages.parent_message(run_view(steps, status="succeeded", outcome="All checks passed"))
    assert any("All checks passed" in text for text in texts_of(blocks))


def test_header_is_headline() -> None:
    text, blocks = messages.parent_message(waiting_run())
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "Rotate JWT_SECRET on hotel-voice-bot"}}
    assert text.startswith("Rotate JWT_SECRET on hotel-voice-bot")


# --- Block Kit limits --------------------------------------------------------------------------


def test_ordinary_waiting_run_within_limits() -> None:
    assert limit_problems(*messages.parent_message(waiting_run())) == []


@pytest.mark.parametrize("filler", ["r", "<", "&", "x\n"])
def test_long_reason_within_limits(filler: str) -> None:
    run = waiting_run(reason=filler * LONG)
    assert limit_problems(*messages.parent_message(run)) == []


@pytest.mark.parametrize("filler", ["d", "<", "&"])
def test_long_waiting_detail_within_limits(filler: str) -> None:
    steps = (approval(0, detail=filler * LONG), step(1))
    assert limit_problems(*messages.parent_message(run_view(steps))) == []


@pytest.mark.parametrize("filler", ["d", ">"])
def test_long_done_details_within_limits(filler: str) -> None:
    steps = tuple(step(position, status="done", detail=filler * LONG, actor=APPROVER) for position in range(12))
    steps += (approval(12),)
    assert limit_problems(*messages.parent_message(run_view(steps))) == []


def test_long_outcome_within_limits() -> None:
    steps = (approval(0, status="failed", detail="o" * LONG), step(1))
    run = run_view(steps, status="failed", outcome="<" * LONG, reason="r" * LONG)
    assert limit_problems(*messages.parent_message(run)) == []


def test_many_steps_within_limits() -> None:
    steps = tuple(step(position, status="done", title="t" * 200, detail="d" * 300) for position in range(80))
    steps += (approval(80),)
    assert limit_problems(*messages.parent_message(run_view(steps))) == []


def test_many_secrets_header_within_limits() -> None:
    names = tuple(f"SOME_VERY_LONG_SECRET_NAME_NUMBER_{index}" for index in range(20))
    text, blocks = messages.parent_message(waiting_run(names=names))
    assert limit_problems(text, blocks) == []
    assert blocks[0]["text"]["text"].endswith("…")


def test_many_allowed_users_within_limits() -> None:
    users = tuple(f"U{index:08d}" for index in range(600))
    steps = (approval(0, allowed_users=users), step(1))
    assert limit_problems(*messages.parent_message(run_view(steps))) == []


def test_long_step_title_within_limits() -> None:
    steps = (
        step(0, kind="external", title="T" * LONG, status="waiting", detail="x" * LONG, actions=(DONE,)),
        step(1),
    )
    assert limit_problems(*messages.parent_message(run_view(steps))) == []


# --- escaping -----------------------------------------------------------------------------------


def assert_no_injected_markup(texts: list[str]) -> None:
    for text in texts:
        assert "<!channel>" not in text
        assert "<!here" not in text
        assert "<@U0EVIL>" not in text
        assert "<https://evil.example" not in text


def test_reason_escaped() -> None:
    _, blocks = messages.parent_message(waiting_run(reason=HOSTILE))
    assert_no_injected_markup(texts_of(blocks))
    assert any("&lt;!channel&gt;" in text for text in texts_of(blocks))
    assert any("&amp; done" in text for text in texts_of(blocks))


def test_waiting_detail_escaped() -> None:
    steps = (approval(0, detail=HOSTILE), step(1))
    _, blocks = messages.parent_message(run_view(steps))
    assert_no_injected_markup(texts_of(blocks))


def test_done_detail_escaped() -> None:
    steps = (step(0, status="done", detail=HOSTILE), approval(1))
    _, blocks = messages.parent_message(run_view(steps))
    assert_no_injected_markup(texts_of(blocks))


def test_outcome_escaped() -> None:
    steps = (approval(0, status="failed", detail=HOSTILE), step(1))
    _, blocks = messages.parent_message(run_view(steps, status="failed", outcome=HOSTILE))
    assert_no_injected_markup(texts_of(blocks))


def test_step_title_escaped() -> None:
    steps = (step(0, kind="external", title=HOSTILE, status="waiting", actions=(DONE,)), step(1))
    _, blocks = messages.parent_message(run_view(steps))
    assert_no_injected_markup(texts_of(blocks))


# --- thread replies -------------------------------------------------------------------------------


def test_step_reply_escapes_detail() -> None:
    done = step(1, status="done", detail=HOSTILE, actor=APPROVER)
    reply = messages.step_reply(waiting_run(), done)
    assert reply is not None
    assert_no_injected_markup([reply])
    assert f"<@{APPROVER}>" in reply


@pytest.mark.parametrize("status", ["done", "failed", "skipped", "waiting"])
def test_step_reply_within_text_limit(status: str) -> None:
    long_step = step(1, status=status, detail="<" * LONG, actions=(DONE,) if status == "waiting" else ())
    reply = messages.step_reply(waiting_run(), long_step)
    assert reply is not None
    assert len(reply) <= MAX_TEXT


def test_running_step_with_buttons_has_no_reply() -> None:
    assert messages.step_reply(waiting_run(), approval(0, status="running")) is None


def test_progress_reply_escapes_output() -> None:
    output = HOSTILE + "\n" + HOSTILE + "\n```\n" + "<" * LONG
    reply = messages.progress_reply(waiting_run(), step(2, status="running"), output)
    assert_no_injected_markup([reply])
    assert len(reply) <= MAX_TEXT


@pytest.mark.parametrize("filler", ["x", "<"])
def test_progress_reply_closes_code_block(filler: str) -> None:
    output = "Updating machines\n" + filler * LONG
    reply = messages.progress_reply(waiting_run(), step(2, status="running"), output)
    assert reply.count("```") == 2
    assert reply.endswith("```")


def test_summary_reply_escapes_reason_and_outcome() -> None:
    steps = (approval(0, status="done", actor=APPROVER, decisions=((APPROVER, "approve"),)),
             step(1, status="failed", detail="x"))
    run = run_view(steps, status="failed", reason=HOSTILE + "r" * LONG, outcome=HOSTILE + "o" * LONG)
    summary = messages.summary_reply(run)
    assert_no_injected_markup([summary])
    assert len(summary) <= MAX_TEXT
    assert f"approved by <@{APPROVER}>" in summary


def test_summary_reply_of_denied_run_names_no_approver() -> None:
    steps = (approval(0, status="failed", actor=APPROVER, detail="denied"), step(1))
    summary = messages.summary_reply(run_view(steps, status="denied", outcome="denied"))
    assert "approved by" not in summary


def test_cancelled_run_shown_as_cancelled() -> None:
    steps = (approval(0, status="failed", actor=REQUESTER, detail="Cancelled: wrong secret"), step(1))
    run = run_view(steps, status="cancelled", outcome="Cancelled: wrong secret")
    text, blocks = messages.parent_message(run)
    assert text.endswith(": cancelled")
    assert any("status: *cancelled*" in block for block in texts_of(blocks))
    assert "is *cancelled*" in messages.summary_reply(run)


def test_summary_reply_duration() -> None:
    steps = (approval(0, status="done", actor=APPROVER), step(1, status="done"))
    summary = messages.summary_reply(run_view(steps, status="succeeded"))
    assert "Took 3 min 7 s" in summary


def test_rejected_reply_escapes_reason() -> None:
    assert_no_injected_markup([messages.rejected_reply(HOSTILE)])


def test_started_reply_escapes_headline() -> None:
    run = dataclasses.replace(waiting_run(), app="<!channel>")
    assert_no_injected_markup([messages.started_reply(run, None)])


def test_mention_of_terminal_actor_is_plain_text() -> None:
    assert messages.mention("local:alice") == "local:alice"
    assert messages.mention("terminal:<b>") == "terminal:&lt;b&gt;"
    assert messages.mention("U0BBB") == "<@U0BBB>"
    assert messages.mention("S0GROUP") == "<!subteam^S0GROUP>"


def test_takeover_rejected_reply_names_cancellers() -> None:
    reply = messages.takeover_rejected_reply("JWT_SECRET", "hotel-voice-bot", run_id=RUN_ID,
                                             step_title="Update the Fly.io secret", step_status="running",
                                             requester=REQUESTER, approvers=(REQUESTER, APPROVER), permalink=None)
    assert f"run `{RUN_ID}`" in reply
    assert "*Update the Fly.io secret* (running)" in reply
    assert f"<@{REQUESTER}> (its requester) or an approver: <@{APPROVER}>" in reply
    assert "A running step has to end" in reply


def test_takeover_rejected_reply_without_requester() -> None:
    # An automatic rotation's requester is the bot, which cannot cancel anything.
    reply = messages.takeover_rejected_reply("JWT_SECRET", "hotel-voice-bot", run_id=RUN_ID,
                                             step_title=HOSTILE, step_status="waiting", requester=None,
                                             approvers=(APPROVER,), permalink=None)
    assert "its requester" not in reply
    assert f"an approver: <@{APPROVER}>" in reply
    assert "A running step" not in reply
    assert_no_injected_markup([reply])
