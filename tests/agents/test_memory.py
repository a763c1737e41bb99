"""Bounded memory: both bounds after every add, tool pairs kept whole, summaries."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from arbor.agents import Memory, MemoryPolicy
from arbor.agents.memory import estimate_message_tokens
from arbor.llm.types import Message, ToolCall


def _assert_valid(memory: Memory) -> None:
    """No tool message without the assistant call it answers, and bounds hold."""
    open_calls: set[str] = set()
    for m in memory.messages():
        if m.role == "assistant":
            open_calls = {c.id for c in m.tool_calls or ()}
        elif m.role == "tool":
            assert m.tool_call_id in open_calls, "orphan tool result"
        else:
            open_calls = set()
    assert memory.message_count == len(memory.messages()) <= memory.policy.max_messages
    assert memory.token_count <= memory.policy.max_tokens
    assert memory.token_count == sum(estimate_message_tokens(m) for m in memory.messages())


def _turn(memory: Memory, i: int, *, tools: int = 0) -> None:
    memory.add(Message.user(f"question {i} " + "x" * (i % 40)))
    if tools:
        calls = [ToolCall(id=f"c{i}-{k}", name="t", arguments="{}") for k in range(tools)]
        memory.add(Message.assistant(None, tool_calls=calls))
        for call in calls:
            memory.add(Message.tool(call.id, f"result {call.id}"))
    memory.add(Message.assistant(f"answer {i}"))


def test_policy_defaults_and_validation() -> None:
    assert MemoryPolicy() == MemoryPolicy(max_messages=50, max_tokens=8000, strategy="drop_oldest")
    with pytest.raises(ValidationError):
        MemoryPolicy(max_messages=0)


def test_system_message_is_kept_and_replaced() -> None:
    memory = Memory(MemoryPolicy(max_messages=3))
    memory.add(Message.system("v1"))
    for i in range(10):
        _turn(memory, i)
    memory.add(Message.system("v2"))
    msgs = memory.messages()
    assert msgs[0] == Message.system("v2")
    assert [m.content for m in msgs[1:]] == ["question 9 " + "x" * 9, "answer 9"]


def test_oldest_turns_go_first_and_tool_pairs_stay_together() -> None:
    memory = Memory(MemoryPolicy(max_messages=6))
    _turn(memory, 0)
    _turn(memory, 1, tools=2)  # user, assistant(2 calls), 2 tool results, answer
    msgs = memory.messages()
    # 7 messages would not fit: turn 0's question went.
    assert [m.role for m in msgs] == ["assistant", "user", "assistant", "tool", "tool", "assistant"]
    _turn(memory, 2)
    roles = ["assistant", "tool", "tool", "assistant", "user", "assistant"]
    assert [m.role for m in memory.messages()] == roles
    memory.add(Message.user("one more"))
    # The call and both its results leave together, though one message would have sufficed.
    assert [m.role for m in memory.messages()] == ["assistant", "user", "assistant", "user"]
    _assert_valid(memory)


def test_each_message_is_counted_once() -> None:
    counted: list[Message] = []

    def count(message: Message) -> int:
        counted.append(message)
        return 10

    memory = Memory(MemoryPolicy(max_messages=8, max_tokens=50), count)
    for i in range(1_000):
        _turn(memory, i, tools=i % 2)
    # Running totals: trimming never re-counts what is kept.
    assert len(counted) == sum(2 + (2 if i % 2 else 0) for i in range(1_000))
    assert memory.token_count == 10 * memory.message_count <= 50


def test_a_tool_result_must_answer_the_latest_call() -> None:
    memory = Memory()
    memory.add(Message.user("hi"))
    with pytest.raises(ValueError, match="does not answer"):
        memory.add(Message.tool("nope", "x"))


def test_ten_thousand_turns_stay_within_bounds_in_constant_time_per_add() -> None:
    memory = Memory(MemoryPolicy(max_messages=40, max_tokens=600))
    memory.add(Message.system("You are terse."))

    def timed(turns: range) -> float:
        """CPU seconds of this thread: what the adds cost, whatever else the machine runs."""
        started = time.thread_time()
        for i in turns:
            _turn(memory, i, tools=i % 3)
            assert memory.message_count <= 40 and memory.token_count <= 600
        return time.thread_time() - started

    first = timed(range(1_000))
    timed(range(1_000, 9_000))
    last = timed(range(9_000, 10_000))
    _assert_valid(memory)
    assert memory.messages()[0].content == "You are terse."
    assert memory.messages()[-1].content == "answer 9999"
    # Linear overall: the last thousand turns cost about what the first thousand did (a
    # quadratic re-count would make them ~10x slower). Generous for noisy machines.
    assert last < first * 3 + 0.05


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(20, 300),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200)), max_size=40),
)
def test_bounds_hold_after_every_add(
    max_messages: int, max_tokens: int, turns: list[tuple[int, int]]
) -> None:
    memory = Memory(MemoryPolicy(max_messages=max_messages, max_tokens=max_tokens))

    def check(newest: list[Message]) -> None:
        _assert_orphan_free(memory)
        if memory.message_count > max_messages or memory.token_count > max_tokens:
            # Only the newest block, alone and too big to fit, may exceed the bounds.
            assert memory.messages() == newest

    for i, (tools, size) in enumerate(turns):
        user = Message.user("q" * size)
        memory.add(user)
        check([user])
        calls = [ToolCall(id=f"{i}-{k}", name="t") for k in range(tools)]
        if calls:
            block = [Message.assistant(None, tool_calls=calls)]
            memory.add(block[0])
            check(block)
            for call in calls:
                block.append(Message.tool(call.id, "r"))
                memory.add(block[-1])
                check(block)


def _assert_orphan_free(memory: Memory) -> None:
    open_calls: set[str] = set()
    for m in memory.messages():
        if m.role == "tool":
            assert m.tool_call_id in open_calls
        else:
            open_calls = {c.id for c in m.tool_calls or ()}


async def test_summarize_folds_dropped_turns_into_one_message() -> None:
    seen: list[list[Message]] = []

    async def summarizer(messages: list[Message]) -> str:
        seen.append(messages)
        return f"{len(messages)} earlier messages"

    memory = Memory(MemoryPolicy(max_messages=5, strategy="summarize"), summarizer=summarizer)
    memory.add(Message.system("sys"))
    for i in range(3):
        _turn(memory, i)
    assert memory.needs_compaction
    await memory.compact()
    assert not memory.needs_compaction
    msgs = memory.messages()
    assert msgs[0].content == "sys"
    assert msgs[1].role == "system" and msgs[1].content is not None
    assert msgs[1].content.endswith("earlier messages")
    assert len(msgs) <= 5
    _assert_valid(memory)
    # The next summary includes the previous one, so nothing is silently lost.
    for i in range(3, 6):
        _turn(memory, i)
    await memory.compact()
    assert seen[1][0].content == msgs[1].content


async def test_failing_or_missing_summarizer_falls_back_to_dropping() -> None:
    async def broken(messages: list[Message]) -> str:
        raise RuntimeError("model down")

    for summarizer in (broken, None):
        memory = Memory(MemoryPolicy(max_messages=2, strategy="summarize"), summarizer=summarizer)
        for i in range(3):
            _turn(memory, i)
        await memory.compact()
        assert not memory.needs_compaction
        contents = [m.content for m in memory.messages()]
        # No summary; at most the room reserved for it was given up.
        assert contents in (["question 2 xx", "answer 2"], ["answer 2"])


def test_drop_oldest_keeps_nothing_aside() -> None:
    memory = Memory(MemoryPolicy(max_messages=2))
    for i in range(5):
        _turn(memory, i)
    assert not memory.needs_compaction
