"""Chunks of C# models and datasheet text: bounded in size, headed by their file and class,
cut at statement or paragraph boundaries, nothing lost."""

from __future__ import annotations

import itertools
import re

import pytest
from _renode_data import SVD_DIR

from arbor.apps.renode.chunking import (
    MAX_CHARS,
    chunk_csharp,
    chunk_manual,
    split_identifier,
)
from arbor.apps.renode.emitter import emit_model
from arbor.apps.renode.svd import load_device


def test_split_identifier() -> None:
    assert split_identifier("STM32_UARTModel") == "STM32 UART Model"
    assert split_identifier("NRF52840_Timer") == "NRF52840 Timer"


@pytest.mark.parametrize("name", ["STM32F103xx", "rp2040"])
def test_every_emitted_model_chunks_within_bounds(name: str) -> None:
    device = load_device(SVD_DIR / f"{name}.svd")
    for regmap in device.register_maps()[:12]:
        source = emit_model(regmap).source
        chunks = chunk_csharp(source, f"gen/{regmap.peripheral}.cs")
        assert chunks, regmap.peripheral
        for chunk in chunks:
            assert len(chunk.text) <= MAX_CHARS, (regmap.peripheral, len(chunk.text))
            assert chunk.text.startswith(f"// gen/{regmap.peripheral}.cs")
            assert chunk.title.split(".")[-1] in (regmap.peripheral, "Registers") or chunk.title
        # every register's Define line lands in some chunk
        defines = set(re.findall(r"Registers\.(\w+)\.Define", source))
        found = {d for c in chunks for d in re.findall(r"Registers\.(\w+)\.Define", c.text)}
        assert defines == found, regmap.peripheral


def test_a_small_class_is_one_chunk_with_its_comment() -> None:
    source = """namespace A.B
{
    /* Watchdog */
    public class WDT : BasicDoubleWordPeripheral
    {
        public void Reset() { }
    }
}
"""
    [chunk] = chunk_csharp(source, "src/WDT.cs")
    assert chunk.title == "A.B.WDT"
    assert chunk.text.splitlines()[0] == "// src/WDT.cs — A.B.WDT (WDT)"
    assert "/* Watchdog */" in chunk.text and "public void Reset()" in chunk.text


def test_code_without_types_and_empty_files() -> None:
    assert chunk_csharp("", "x.cs") == []
    [chunk] = chunk_csharp("using System;\n", "x.cs")
    assert chunk.title == "" and "using System;" in chunk.text


def test_manual_sections_and_overlap() -> None:
    para = "The counter counts up to the auto-reload value and wraps. " * 12
    text = "\n\n".join(
        [
            "# 15 General-purpose timers",
            "15.1 Introduction",
            para,
            para + "second.",
            para + "third.",
            "15.4.11 TIMx auto-reload register (TIMx_ARR)",
            "ARR[15:0]: the value to be loaded in the actual auto-reload register.",
        ]
    )
    chunks = chunk_manual(text)
    assert {c.title for c in chunks} == {
        "15.1 Introduction",
        "15.4.11 TIMx auto-reload register (TIMx_ARR)",
    }
    intro = [c for c in chunks if c.title == "15.1 Introduction"]
    assert len(intro) >= 2 and all(len(c.text) <= MAX_CHARS for c in chunks)
    # consecutive chunks of a section share a paragraph
    assert any(
        set(a.text.split("\n\n")[1:]) & set(b.text.split("\n\n")[1:])
        for a, b in itertools.pairwise(intro)
    )
    assert chunks[-1].text.startswith("15.4.11 TIMx auto-reload register (TIMx_ARR)\n\nARR[15:0]")


def test_a_huge_paragraph_is_cut_between_sentences() -> None:
    text = "HEADING ONE\n\n" + " ".join(f"Sentence number {i} is here." for i in range(400))
    chunks = chunk_manual(text)
    assert len(chunks) > 3 and all(len(c.text) <= MAX_CHARS for c in chunks)
    assert all(c.text.rstrip().endswith(".") for c in chunks)
