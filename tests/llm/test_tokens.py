"""Offline token counting: encodings per model, OpenAI's per-message overhead."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from arbor.llm import tokens
from arbor.llm.tokens import (
    BPETokenizer,
    Tokenizer,
    count_message_tokens,
    encoding_for_model,
    tokenizer_for,
)
from arbor.llm.types import Message, ToolCall

# The example conversation of OpenAI's cookbook "How to count tokens with tiktoken", whose
# published counts are 129 prompt tokens for gpt-3.5-turbo/gpt-4 and 124 for gpt-4o(-mini).
COOKBOOK = [
    Message(
        role="system",
        content="You are a helpful, pattern-following assistant that "
        "translates corporate jargon into plain English.",
    ),
    Message(
        role="system", name="example_user", content="New synergies will help drive top-line growth."
    ),
    Message(
        role="system",
        name="example_assistant",
        content="Things working well together will increase revenue.",
    ),
    Message(
        role="system",
        name="example_user",
        content="Let's circle back when we have more "
        "bandwidth to touch base on opportunities for increased leverage.",
    ),
    Message(
        role="system",
        name="example_assistant",
        content="Let's talk later when we're less busy about how to do better.",
    ),
    Message(
        role="user",
        content="This late pivot means we don't have time to boil the ocean "
        "for the client deliverable.",
    ),
]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("llama3.1:8b", "o200k_base"),
        ("smollm2", "o200k_base"),  # unknown: an estimate
    ],
)
def test_encoding_for_model(model: str, encoding: str) -> None:
    assert encoding_for_model(model) == encoding


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-3.5-turbo", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
    ],
)
def test_matches_openai_cookbook_counts(model: str, expected: int) -> None:
    assert count_message_tokens(COOKBOOK, tokenizer_for("openai", model)) == expected


def test_known_text_counts() -> None:
    assert tokenizer_for("openai", "gpt-4").count("tiktoken is great!") == 6
    assert tokenizer_for("openai", "gpt-4o").count("hello world") == 2
    assert tokenizer_for("openai", "gpt-4o").count("") == 0


def test_tokenizers_are_shared_per_encoding() -> None:
    a, b = tokenizer_for("openai", "gpt-4o"), tokenizer_for("mock", "gpt-5")
    assert a is b
    assert isinstance(a, Tokenizer)
    assert tokenizer_for("openai", "gpt-4") is not a


def test_lone_surrogates_are_counted_not_raised() -> None:
    assert tokenizer_for("openai", "gpt-4o").count("bad \ud800 text") > 0


def test_fast_path_and_public_api_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "Ünïcödé, emoji 😀, code `x = f(y)`, and <|endoftext|> as plain text."
    fast = BPETokenizer("o200k_base").count(text)
    monkeypatch.setattr(tokens, "_rust_bindings", lambda: None)
    public = BPETokenizer("o200k_base").count(text)
    assert fast == public > 0


def test_concurrent_first_use_loads_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    real = tokens._load_counter

    def counting(name: str) -> object:
        loads.append(name)
        return real(name)

    monkeypatch.setattr(tokens, "_load_counter", counting)
    tok = BPETokenizer("cl100k_base")
    threads = [threading.Thread(target=tok.count, args=("hi there",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["cl100k_base"]


def test_message_overhead_names_and_tool_calls() -> None:
    tok = tokenizer_for("openai", "gpt-4o")
    base = count_message_tokens([Message.user("hello world")], tok)
    assert base == 3 + 1 + 2 + 3  # per message + role + text + reply priming
    named = count_message_tokens([Message(role="user", content="hello world", name="ann")], tok)
    assert named == base + tok.count("ann") + 1
    call = ToolCall(id="c1", name="add", arguments='{"a": 1, "b": 2}')
    with_call = count_message_tokens([Message.assistant(None, [call])], tok)
    json_text = '{"name":"add","arguments":{"a": 1, "b": 2}}'
    assert with_call == 3 + tok.count("assistant") + tok.count(json_text) + 3
    assert count_message_tokens([], tok) == 3
    assert count_message_tokens([], tok, prime_reply=False) == 0


def test_importing_does_not_load_encodings() -> None:
    code = (
        "import sys, arbor.llm.tokens as t; t.tokenizer_for('openai', 'gpt-4o');"
        "print('bpe_openai' in sys.modules or 'bpe_openai._bindings' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
