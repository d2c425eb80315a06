"""The `/slack/events` endpoint: signature check, then bolt's dispatcher.

The signature is checked here rather than by bolt, because bolt's check logs the whole
request body when a signature is bad, and a body may carry a secret value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

logger = logging.getLogger(__name__)

# Slack rejects nothing larger itself, but no slash command or interaction comes close;
# the cap keeps a forged request from making the bot buffer megabytes.
MAX_BODY_BYTES = 1024 * 1024
MAX_CLOCK_SKEW_SECONDS = 300

# Headers bolt uses between its own processes to run a lazy listener directly; a request
# from outside must never carry them.
_INTERNAL_HEADERS = ("x-slack-bolt-lazy-only", "x-slack-bolt-lazy-function-name")


class SlackEndpoint:
    def __init__(self, app: AsyncApp, signing_secret: str) -> None:
        self.app = app
        self.verifier = SignatureVerifier(signing_secret)

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return web.json_response({"error": "request too large"}, status=413)
        raw = bytearray()
        # StreamReader.read(n) may return less than n before the body ends, so read to EOF.
        while chunk := await request.content.read(64 * 1024):
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return web.json_response({"error": "request too large"}, status=413)
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return web.json_response({"error": "invalid request"}, status=400)

        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        problem = self._signature_problem(body, timestamp, signature)
        if problem is not None:
            # Only metadata: a rejected body is never logged.
            logger.warning("rejected request: %s remote=%s bytes=%d", problem, request.remote, len(raw))
            return web.json_response({"error": "invalid request"}, status=401)

        headers: dict[str, str | Sequence[str]] = {
            name: value for name, value in request.headers.items() if name.lower() not in _INTERNAL_HEADERS
        }
        bolt_request = AsyncBoltRequest(body=body, query=request.query_string, headers=headers)
        _repair_form_body(bolt_request)
        bolt_response = await self.app.async_dispatch(bolt_request)
        response = web.Response(status=bolt_response.status, body=bolt_response.body)
        for name, values in bolt_response.headers.items():
            if name.lower() == "content-length":
                continue
            for value in values:
                response.headers.add(name, value)
        return response

    def _signature_problem(self, body: str, timestamp: str, signature: str) -> str | None:
        if not timestamp or not signature:
            return "missing signature headers"
        if not timestamp.isdigit():
            return "non-numeric timestamp"
        skew = abs(time.time() - int(timestamp))
        if skew > MAX_CLOCK_SKEW_SECONDS:
            return f"stale timestamp ({int(skew)} s off)"
        if not self.verifier.is_valid(body, timestamp, signature):
            return "bad signature"
        return None


def _repair_form_body(request: AsyncBoltRequest) -> None:
    """Parse slash command bodies that bolt mistakes for interactivity payloads.

    bolt treats any form body containing the substring "payload" as an interactivity
    request, so `/secret rotate WEBHOOK_PAYLOAD_KEY` would parse as empty and get a 404.
    """
    if request.body or not request.raw_body or request.raw_body.startswith("{"):
        return
    fields = dict(parse_qsl(request.raw_body, keep_blank_values=True))
    if "payload" in fields or "command" not in fields:
        return
    request.body = fields
    request.context = build_async_context(AsyncBoltContext({}), fields)
