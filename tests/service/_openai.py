"""Shared pieces of the OpenAI-compatible endpoint tests: the official ``openai`` SDK pointed
at an app in process (async) and the mock upstream as the configured provider."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
from fastapi import FastAPI

from arbor.llm.types import ChatRequest

#: The upstream key configured for the mock provider: must never leave the server.
UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"
APPROVE = json.dumps({"verdict": "approve", "issues": [], "summary": "Looks right."})


def provider_settings(upstream_url: str) -> dict[str, Any]:
    """Settings overrides: the mock upstream as provider ``mock`` (priced, so it is listed),
    one attempt per call so upstream failures answer at once."""
    return {
        "providers": {"mock": {"base_url": upstream_url, "api_key": UPSTREAM_KEY}},
        "llm": {
            "cache": {"enabled": False},
            "retry": {"max_attempts": 1},
            "prices": {"mock:mock-1": {"input": 1.0, "output": 2.0}},
        },
    }


def async_sdk(app: FastAPI, key: str) -> openai.AsyncOpenAI:
    """The unmodified SDK over the app's ASGI interface (no socket), retries off."""
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://testserver/v1", http_client=http, max_retries=0
    )


def echo_or_review(request: ChatRequest) -> str:
    """``test:echo``: echoes the last user message; a reviewer (asked for a JSON object)
    gets an approval."""
    last = request.messages[-1].content or ""
    if "JSON object" in last:
        return APPROVE
    user = next((m for m in reversed(request.messages) if m.role == "user"), None)
    return f"echo: {user.content if user is not None else ''}"
