"""Bounded conversation memory.

A conversation is kept as a queue of *blocks*: an assistant message that calls tools
together with the tool results answering it, or any other single message. Old blocks are
dropped whole, so the model never sees a tool result whose call was forgotten. Message and
token totals are kept as running sums, so an ``add`` costs the same at turn 10 and at turn
10,000. The system message is held apart and never dropped.

With ``strategy="summarize"`` dropped messages are kept aside (boundedly) until the agent
calls :meth:`Memory.compact`, which asks an injected summarizer to fold them into one
summary message; without a summarizer, or when it fails, they simply stay dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from arbor.llm.types import Message

__all__ = ["Memory", "MemoryPolicy", "Summarizer", "estimate_message_tokens"]

log = structlog.get_logger("arbor.agents")

#: Folds messages (the previous summary first, if any) into one summary text.
Summarizer = Callable[[list[Message]], Awaitable[str]]

SUMMARY_PREFIX = "Summary of the earlier conversation:\n"


class MemoryPolicy(BaseModel):
    """How much conversation an agent keeps (loadable from YAML agent definitions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_messages: int = Field(50, ge=1)
    max_tokens: int = Field(8000, ge=1)
    strategy: Literal["drop_oldest", "summarize"] = "drop_oldest"


def estimate_message_tokens(message: Message) -> int:
    """A cheap count (≈4 characters a token plus per-message overhead) used when no
    model-specific tokenizer is given; exactness matters less than being O(len)."""
    chars = len(message.content or "")
    for call in message.tool_calls or ():
        chars += len(call.name) + len(call.arguments)
    return 4 + (chars + 3) // 4


class _Block:
    __slots__ = ("call_ids", "messages", "tokens")

    def __init__(self, message: Message, tokens: int) -> None:
        self.messages = [message]
        self.tokens = tokens
        self.call_ids = {c.id for c in message.tool_calls or ()}


class Memory:
    """Messages of one conversation, within ``policy``'s bounds after every :meth:`add`.

    The newest block is always kept, so a single block larger than the bounds (one huge
    message, or one assistant turn with more tool calls than ``max_messages``) is the only
    way to exceed them.
    """

    def __init__(
        self,
        policy: MemoryPolicy | None = None,
        count_tokens: Callable[[Message], int] = estimate_message_tokens,
        *,
        summarizer: Summarizer | None = None,
    ) -> None:
        self.policy = policy or MemoryPolicy()
        self.summarizer = summarizer
        self._count = count_tokens
        self._system: Message | None = None
        self._system_tokens = 0
        self._summary: Message | None = None
        self._summary_tokens = 0
        self._blocks: deque[_Block] = deque()
        self._message_count = 0
        self._block_tokens = 0
        # Dropped messages waiting for compact(); bounded so a never-compacted memory
        # does not grow without limit.
        self._dropped: deque[Message] = deque(maxlen=4 * self.policy.max_messages)

    # ---- reading ----------------------------------------------------------------------
    def messages(self) -> list[Message]:
        """The conversation to send: system, summary (if any), then the kept turns."""
        out: list[Message] = []
        if self._system is not None:
            out.append(self._system)
        if self._summary is not None:
            out.append(self._summary)
        for block in self._blocks:
            out.extend(block.messages)
        return out

    @property
    def message_count(self) -> int:
        return self._message_count + (self._system is not None) + (self._summary is not None)

    @property
    def token_count(self) -> int:
        return self._block_tokens + self._system_tokens + self._summary_tokens

    @property
    def needs_compaction(self) -> bool:
        """Messages were dropped and the policy wants them summarized."""
        return self.policy.strategy == "summarize" and bool(self._dropped)

    def __len__(self) -> int:
        return self.message_count

    # ---- writing ----------------------------------------------------------------------
    def add(self, message: Message) -> None:
        """Append a message (a system message replaces the current one), then trim."""
        tokens = self._count(message)
        if message.role == "system":
            self._system, self._system_tokens = message, tokens
        elif message.role == "tool":
            self._add_tool_result(message, tokens)
        else:
            self._blocks.append(_Block(message, tokens))
            self._message_count += 1
            self._block_tokens += tokens
        self._trim()

    def extend(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.add(message)

    def clear(self) -> None:
        """Forget the conversation (the system message stays)."""
        self._blocks.clear()
        self._dropped.clear()
        self._summary, self._summary_tokens = None, 0
        self._message_count = self._block_tokens = 0

    async def compact(self) -> None:
        """Fold dropped messages into the summary message, when the policy says so."""
        if not self.needs_compaction:
            return
        if self.summarizer is None:
            self._dropped.clear()
            return
        if self._summary is None:  # make room for the summary, so it displaces nothing
            self._trim(reserve=1)
        dropped = list(self._dropped)
        self._dropped.clear()
        previous = [self._summary] if self._summary is not None else []
        try:
            text = await self.summarizer(previous + dropped)
        except Exception as exc:  # a failed summary only costs the old turns
            log.warning("memory.summarize_failed", error=repr(exc), dropped=len(dropped))
            return
        self._summary = Message(role="system", content=SUMMARY_PREFIX + text)
        self._summary_tokens = self._count(self._summary)
        self._trim()

    # ---- internals --------------------------------------------------------------------
    def _add_tool_result(self, message: Message, tokens: int) -> None:
        last = self._blocks[-1] if self._blocks else None
        if last is None or message.tool_call_id not in last.call_ids:
            raise ValueError(
                f"tool result {message.tool_call_id!r} does not answer a tool call of the "
                "latest assistant message"
            )
        last.messages.append(message)
        last.tokens += tokens
        self._message_count += 1
        self._block_tokens += tokens

    def _over(self, reserve: int = 0) -> bool:
        return (
            self.message_count + reserve > self.policy.max_messages
            or self.token_count > self.policy.max_tokens
        )

    def _trim(self, reserve: int = 0) -> None:
        keep_summary = self.policy.strategy == "summarize"
        while self._over(reserve) and len(self._blocks) > 1:
            block = self._blocks.popleft()
            self._message_count -= len(block.messages)
            self._block_tokens -= block.tokens
            if keep_summary:
                self._dropped.extend(block.messages)
        if self._over() and self._summary is not None:
            # The newest block alone does not fit beside the summary: the summary goes.
            self._summary, self._summary_tokens = None, 0
