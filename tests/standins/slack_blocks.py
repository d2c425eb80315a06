"""Block Kit checks that the Slack stand-in applies to blocks and views given as dicts.

The limits are Slack's published ones (docs.slack.dev/reference/block-kit, read in
2025): 50 blocks per message, 100 per modal or Home tab, section text 1-3000
characters, at most 10 fields of at most 2000 characters, and so on below. slack_sdk
checks only its model objects, never plain dicts, so without these checks a dict that
Slack rejects would pass every test.

Each problem becomes one line of `response_metadata.messages` in Slack's format,
`[ERROR] <reason> [json-pointer:<path>]`. Slack checks more than this module does
(image URLs, date formats, rich text structure), so passing here does not prove that
Slack accepts a block.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_ID_LENGTH = 255
MAX_VIEW_TEXT_LENGTH = 24
MAX_PRIVATE_METADATA_LENGTH = 3000

TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})

# Element types that may appear in an actions block, a section accessory or an input block.
INTERACTIVE_ELEMENT_TYPES = frozenset(
    {
        "button",
        "checkboxes",
        "datepicker",
        "datetimepicker",
        "email_text_input",
        "file_input",
        "number_input",
        "overflow",
        "plain_text_input",
        "radio_buttons",
        "rich_text_input",
        "timepicker",
        "url_text_input",
        "workflow_button",
        "static_select",
        "external_select",
        "users_select",
        "conversations_select",
        "channels_select",
        "multi_static_select",
        "multi_external_select",
        "multi_users_select",
        "multi_conversations_select",
        "multi_channels_select",
    }
)

# Buttons and overflow menus cannot collect input, so Slack rejects them in input blocks.
INPUT_ELEMENT_TYPES = INTERACTIVE_ELEMENT_TYPES - {"button", "overflow", "workflow_button"}


class BlockProblems:
    """Problems found in one request, in Slack's `response_metadata.messages` format."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, pointer: str, reason: str) -> None:
        self.messages.append(f"[ERROR] {reason} [json-pointer:{pointer}]")


def check_message_blocks(blocks: list[Any], *, pointer: str = "/blocks") -> list[str]:
    """Check the blocks of a message and return Slack-style problem lines, empty when valid."""
    problems = BlockProblems()
    _check_block_list(blocks, pointer, MAX_MESSAGE_BLOCKS, problems)
    return problems.messages


def check_view(view: dict[str, Any], *, expected_types: frozenset[str], pointer: str = "/view") -> list[str]:
    """Check a modal or Home tab view and return Slack-style problem lines, empty when valid."""
    problems = BlockProblems()

    view_type = view.get("type")
    if view_type not in expected_types:
        problems.add(f"{pointer}/type", f"must be one of {sorted(expected_types)}, got {view_type!r}")
        return problems.messages

    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        problems.add(f"{pointer}/blocks", "must be an array of blocks")
    else:
        _check_block_list(blocks, f"{pointer}/blocks", MAX_VIEW_BLOCKS, problems)

    if view_type == "modal":
        _check_text(view.get("title"), f"{pointer}/title", problems, max_length=MAX_VIEW_TEXT_LENGTH, plain_only=True)
        for key in ("submit", "close"):
            if key in view:
                _check_text(view[key], f"{pointer}/{key}", problems, max_length=MAX_VIEW_TEXT_LENGTH, plain_only=True)
        has_input = isinstance(blocks, list) and any(_block_type(block) == "input" for block in blocks)
        if has_input and "submit" not in view:
            problems.add(f"{pointer}/submit", "a modal with an input block must define submit")
    else:
        for key in ("submit", "close"):
            if key in view:
                problems.add(f"{pointer}/{key}", f"a {view_type} view cannot have {key}")

    _check_string(view, "private_metadata", pointer, problems, max_length=MAX_PRIVATE_METADATA_LENGTH)
    _check_string(view, "callback_id", pointer, problems, max_length=MAX_ID_LENGTH)
    _check_string(view, "external_id", pointer, problems, max_length=MAX_ID_LENGTH)
    return problems.messages


def fill_generated_ids(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every block without a block_id, and every element without an action_id, a random one.

    Slack does the same when it stores a message or view, so payloads built from stored
    blocks carry ids just as Slack's do. The input list is not changed.
    """
    filled: list[dict[str, Any]] = []
    for block in blocks:
        block = dict(block)
        block.setdefault("block_id", secrets.token_urlsafe(4))
        if isinstance(block.get("elements"), list) and block.get("type") == "actions":
            block["elements"] = [_with_action_id(element) for element in block["elements"]]
        if isinstance(block.get("accessory"), dict):
            block["accessory"] = _with_action_id(block["accessory"])
        if isinstance(block.get("element"), dict):
            block["element"] = _with_action_id(block["element"])
        filled.append(block)
    return filled


def _with_action_id(element: Any) -> Any:
    if not isinstance(element, dict) or element.get("type") not in INTERACTIVE_ELEMENT_TYPES:
        return element
    element = dict(element)
    element.setdefault("action_id", secrets.token_urlsafe(4))
    return element


def _block_type(block: Any) -> Any:
    return block.get("type") if isinstance(block, dict) else None


def _check_block_list(blocks: list[Any], pointer: str, max_blocks: int, problems: BlockProblems) -> None:
    if len(blocks) > max_blocks:
        problems.add(pointer, f"no more than {max_blocks} items allowed, got {len(blocks)}")

    seen_block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        block_pointer = f"{pointer}/{index}"
        if not isinstance(block, dict):
            problems.add(block_pointer, "each block must be an object")
            continue

        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not 1 <= len(block_id) <= MAX_ID_LENGTH:
                problems.add(f"{block_pointer}/block_id", f"must be a string of 1-{MAX_ID_LENGTH} characters")
            elif block_id in seen_block_ids:
                problems.add(f"{block_pointer}/block_id", f"duplicate block_id {block_id!r}")
            else:
                seen_block_ids.add(block_id)

        checker = _BLOCK_CHECKERS.get(block.get("type"))  # type: ignore[arg-type]
        if checker is None:
            problems.add(f"{block_pointer}/type", f"unsupported block type {block.get('type')!r}")
            continue
        checker(block, block_pointer, problems)


def _check_text(
    value: Any,
    pointer: str,
    problems: BlockProblems,
    *,
    max_length: int,
    min_length: int = 1,
    plain_only: bool = False,
) -> None:
    """Check a text composition object such as {"type": "plain_text", "text": "Approve"}."""
    if not isinstance(value, dict):
        problems.add(pointer, "must be a text object")
        return
    allowed = {"plain_text"} if plain_only else TEXT_TYPES
    if value.get("type") not in allowed:
        problems.add(f"{pointer}/type", f"must be one of {sorted(allowed)}")
    text = value.get("text")
    if not isinstance(text, str):
        problems.add(f"{pointer}/text", "must be a string")
        return
    if len(text) < min_length:
        problems.add(f"{pointer}/text", f"must be at least {min_length} characters")
    if len(text) > max_length:
        problems.add(f"{pointer}/text", f"must be less than {max_length + 1} characters, got {len(text)}")


def _check_string(
    container: dict[str, Any], key: str, pointer: str, problems: BlockProblems, *, max_length: int
) -> None:
    if key not in container:
        return
    value = container[key]
    if not isinstance(value, str):
        problems.add(f"{pointer}/{key}", "must be a string")
    elif len(value) > max_length:
        problems.add(f"{pointer}/{key}", f"must be less than {max_length + 1} characters, got {len(value)}")


def _check_section(block: dict[str, Any], pointer: str, problems: BlockProblems) -> None:
    if "text" not in block and "fields" not in block:
        problems.add(pointer, "a section needs text or fields")
    if "text" in block:
        _check_text(block["text"], f"{pointer}/text", problems, max_length=3000)
    if "fields" in block:
        fields = block["fields"]
        if not isinstance(fields, list) or not fields:
            problems.add(f"{pointer}/fields", "must be a non-empty array")
        else:
            if len(fields) > 10:
                problems.add(f"{pointer}/fields", f"no more than 10 items allowed, got {len(fields)}")
            for index, field in enumerate(fields):
                _check_text(field, f"{pointer}/fields/{index}", problems, max_length=2000)
    if "accessory" in block:
        allowed = INTERACTIVE_ELEMENT_TYPES | {"image"}
        _check_element(block["accessory"], f"{pointer}/accessory", problems, allowed=allowed)


def _check_header(block: dict[str, Any], pointer: str, problems: BlockProblems) -> None:
    _check_text(block.get("text"), f"{pointer}/text", problems, max_length=150, plain_only=True)


def _check_actions(block: dict[str, Any], pointer: str, problems: BlockProblems) -> None:
    elements = block.get("elements")
    if not isinstance(elements, list) or not elements:
        problems.add(f"{pointer}/elements", "must be a non-empty array")
        return
    if len(elements) > 25:
        problems.add(f"{pointer}/elements", f"no more than 25 items allowed, got {len(elements)}")

    # Slack requires action_ids to be unique within their block, because the payload
    # names an element only by block_id and action_id.
    seen_action_ids: set[str] = set()
    for index, element in enumerate(elements):
        element_pointer = f"{pointer}/elements/{index}"
        _check_element(element, element_pointer, problems, allowed=INTERACTIVE_ELEMENT_TYPES)
        action_id = element.get("action_id") if isinstance(element, dict) else None
        if isinstance(action_id, str):
            if action_id in seen_action_ids:
                problems.add(f"{element_pointer}/action_id", f"duplicate action_id {action_id!r} in one block")
            seen_action_ids.add(action_id)


def _check_context(block: dict[str, Any], pointer: str, problems: BlockProblems) -> None:
    elements = block.get("elements")
    if not isinstance(elements, list) or not elements:
        problems.add(f"{pointer}/elements", "must be a non-empty array")
        return
    if len(elements) > 10:
        problems.add(f"{pointer}/elements", f"no more than 10 items allowed, got {len(elements)}")
    for index, element in enumerate(elements):
        element_pointer = f"{pointer}/elements/{index}"
        if isinstance(element, dict) and element.get("type") == "image":
            _check_image(element, element_pointer, problems)
        else:
            _check_text(element, element_pointer, problems, max_length=3000)


def _check_divider(block: dict[str, Any], pointer: str, problems: BlockProblems) -> None:
    return None


def _check_image(block: dict[str, Any], pointer: str, problems: BlockProblems) -> None:
    if "image_url" not in block and "slack_file" not in block:
        problems.add(pointer, "an image needs image_url or slack_file")
    _check_string(block, "image_url", pointer, problems, max_length=3000)
    if not isinstance(block.get("alt_text"), str):
        problems.add(f"{pointer}/alt_text", "must be a string")
    else:
        _check_string(block, "alt_text", pointer, problems, max_length=2000)
    if "title" in block:
        _check_text(block["title"], f"{pointer}/title", problems, max_length=2000, plain_only=True)


def _check_input(block: dict[str, Any], pointer: str, problems: BlockProblems) -> None:
    _check_text(block.get("label"), f"{pointer}/label", problems, max_length=2000, plain_only=True)
    if "hint" in block:
        _check_text(block["hint"], f"{pointer}/hint", problems, max_length=2000, plain_only=True)
    if "element" not in block:
        problems.add(f"{pointer}/element", "an input block needs an element")
        return
    _check_element(block["element"], f"{pointer}/element", problems, allowed=INPUT_ELEMENT_TYPES)


def _check_rich_text(block: dict[str, Any], pointer: str, problems: BlockProblems) -> None:
    if not isinstance(block.get("elements"), list):
        problems.add(f"{pointer}/elements", "must be an array")


def _check_markdown(block: dict[str, Any], pointer: str, problems: BlockProblems) -> None:
    if not isinstance(block.get("text"), str):
        problems.add(f"{pointer}/text", "must be a string")
    else:
        _check_string(block, "text", pointer, problems, max_length=12000)


def _check_element(element: Any, pointer: str, problems: BlockProblems, *, allowed: frozenset[str]) -> None:
    if not isinstance(element, dict):
        problems.add(pointer, "must be an object")
        return
    element_type = element.get("type")
    if element_type not in allowed:
        problems.add(f"{pointer}/type", f"unsupported element type {element_type!r} here")
        return
    if element_type == "image":
        _check_image(element, pointer, problems)
        return

    if "action_id" in element:
        action_id = element["action_id"]
        if not isinstance(action_id, str) or not 1 <= len(action_id) <= MAX_ID_LENGTH:
            problems.add(f"{pointer}/action_id", f"must be a string of 1-{MAX_ID_LENGTH} characters")
    if "placeholder" in element:
        _check_text(element["placeholder"], f"{pointer}/placeholder", problems, max_length=150, plain_only=True)
    if "confirm" in element:
        _check_confirm(element["confirm"], f"{pointer}/confirm", problems)

    if element_type == "button":
        _check_text(element.get("text"), f"{pointer}/text", problems, max_length=75, plain_only=True)
        _check_string(element, "value", pointer, problems, max_length=2000)
        _check_string(element, "url", pointer, problems, max_length=3000)
        if "style" in element and element["style"] not in ("primary", "danger"):
            problems.add(f"{pointer}/style", "must be primary or danger")
    if "options" in element:
        max_options = 10 if element_type in ("checkboxes", "radio_buttons") else 100
        _check_options(element["options"], f"{pointer}/options", problems, max_options=max_options)


def _check_options(options: Any, pointer: str, problems: BlockProblems, *, max_options: int) -> None:
    if not isinstance(options, list) or not options:
        problems.add(pointer, "must be a non-empty array")
        return
    if len(options) > max_options:
        problems.add(pointer, f"no more than {max_options} items allowed, got {len(options)}")
    for index, option in enumerate(options):
        option_pointer = f"{pointer}/{index}"
        if not isinstance(option, dict):
            problems.add(option_pointer, "must be an object")
            continue
        _check_text(option.get("text"), f"{option_pointer}/text", problems, max_length=75)
        if not isinstance(option.get("value"), str):
            problems.add(f"{option_pointer}/value", "must be a string")
        else:
            _check_string(option, "value", option_pointer, problems, max_length=150)


def _check_confirm(confirm: Any, pointer: str, problems: BlockProblems) -> None:
    if not isinstance(confirm, dict):
        problems.add(pointer, "must be an object")
        return
    _check_text(confirm.get("title"), f"{pointer}/title", problems, max_length=100, plain_only=True)
    _check_text(confirm.get("text"), f"{pointer}/text", problems, max_length=300)
    _check_text(confirm.get("confirm"), f"{pointer}/confirm", problems, max_length=30, plain_only=True)
    _check_text(confirm.get("deny"), f"{pointer}/deny", problems, max_length=30, plain_only=True)


_BLOCK_CHECKERS: dict[str, Callable[[dict[str, Any], str, BlockProblems], None]] = {
    "actions": _check_actions,
    "context": _check_context,
    "divider": _check_divider,
    "header": _check_header,
    "image": _check_image,
    "input": _check_input,
    "markdown": _check_markdown,
    "rich_text": _check_rich_text,
    "section": _check_section,
}
