"""``workflow:renode`` on the OpenAI-compatible endpoint: a chat message naming a device and
peripheral streams the agents' progress and answers with the C# model (the installed
factory, on a function model standing in for planner, coder and reviewer)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from _openai import async_sdk
from fastapi import FastAPI

from arbor.llm.model import Model
from arbor.llm.types import ChatRequest
from arbor.runtime.runs import RunManager
from arbor.service.context import ServiceContext
from arbor.testing import FunctionModel

ASK = "generate a Renode model for USART1 of STM32F103xx"
PLAN = json.dumps({"side_effects": [], "interrupts": [{"name": "USART1", "driven_by": "SR"}]})
APPROVE = json.dumps({"verdict": "approve", "issues": [], "summary": "Interrupt wired."})
UPDATE = (
    "        private void UpdateInterrupts()\n        {\n            IRQ.Set(false);\n        }\n\n"
)


def agents(request: ChatRequest) -> str:
    """Planner, coder and reviewer by their instructions; the coder adds UpdateInterrupts
    to the model it is given."""
    system = request.messages[0].content or ""
    last = request.messages[-1].content or ""
    if system.startswith("You plan"):
        return PLAN
    if system.startswith("You edit"):
        best = re.search(r"```csharp\n(.*?)\n```", last, re.S)
        assert best is not None
        code = best.group(1).replace(
            "        private void DefineRegisters()",
            UPDATE + "        private void DefineRegisters()",
        )
        return f"```csharp\n{code}\n```"
    return APPROVE


@pytest.fixture
def mcs() -> None:
    if shutil.which("mcs"):
        return
    message = "Mono's mcs is required: apt-get install mono-mcs (make test installs it)"
    if os.environ.get("ARBOR_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def service_models() -> dict[str, Model]:
    return {"test:renode": FunctionModel(agents, name="renode")}


@pytest.fixture
def service_settings_overrides() -> dict[str, Any]:
    return {"default_model": "test:renode"}


@pytest.fixture
async def sdk(
    app: FastAPI, admin_key: str, service_ctx: ServiceContext
) -> AsyncIterator[openai.AsyncOpenAI]:
    if service_ctx.runs is not None:
        await service_ctx.runs.aclose()
    service_ctx.runs = RunManager(service_ctx.checkpoints, service_ctx.client)
    async with async_sdk(app, admin_key) as client:
        yield client


@pytest.mark.usefixtures("mcs")
async def test_a_chat_request_streams_progress_and_returns_the_code(
    sdk: openai.AsyncOpenAI,
) -> None:
    stream = await sdk.chat.completions.create(
        model="workflow:renode",
        messages=[{"role": "user", "content": ASK}],
        stream=True,
        max_tokens=2000,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    steps = [
        "`parse` started",
        "`skeleton` finished",
        "`plan` finished",
        "`coder` asked",
        "`validate` finished",
        "`reviewer` asked",
        "`finish` finished",
    ]
    order = [text.index(step) for step in steps]
    assert order == sorted(order)
    code = text[text.index("`finish` finished") :]
    assert "public class USART1" in code and "UpdateInterrupts()" in code


@pytest.mark.usefixtures("mcs")
async def test_a_request_without_a_known_device_answers_why(sdk: openai.AsyncOpenAI) -> None:
    reply = await sdk.chat.completions.create(
        model="workflow:renode", messages=[{"role": "user", "content": "a UART for my chip"}]
    )
    text = reply.choices[0].message.content or ""
    assert "failed: renode: no known device named in the request" in text
    assert "STM32F103xx" in text
