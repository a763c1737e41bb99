"""Renode retrieval on real Milvus Lite: a small fake Renode checkout (hand-written models and
one the deterministic emitter generated from a shared SVD) and a datasheet text, ingested
idempotently and searched; context_for gives a prompt block within its budget."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from _renode_data import SVD_DIR

from arbor.apps.renode.emitter import emit_model
from arbor.apps.renode.regmap import RegisterMap
from arbor.apps.renode.retrieval import (
    EXAMPLES,
    Embedder,
    RenodeRetrieval,
    RetrievalError,
    fetch_context,
)
from arbor.apps.renode.svd import load_device
from arbor.core.config import Settings
from arbor.store.vectors import VectorStore

UART = """\
using Antmicro.Renode.Core.Structure.Registers;

namespace Antmicro.Renode.Peripherals.UART
{
    // A UART with a baud rate divider and a receive FIFO
    public class STM32_UART : UARTBase, IDoubleWordPeripheral
    {
        public STM32_UART(IMachine machine) : base(machine)
        {
            registers = DefineRegisters();
        }

        public override void WriteChar(byte value)
        {
            receiveFifo.Enqueue(value);
            UpdateInterrupts();
        }

        private void UpdateInterrupts()
        {
            IRQ.Set(receiveNotEmptyInterruptEnabled.Value && receiveFifo.Count > 0);
        }

        private DoubleWordRegisterCollection DefineRegisters()
        {
            // BRR: baud rate register, mantissa and fraction of the divider
            return null;
        }
    }
}
"""

TIMER = """\
namespace Antmicro.Renode.Peripherals.Timers
{
    public class STM32_Timer : LimitTimer
    {
        // prescaler and auto-reload: the update event fires when the counter wraps
        public STM32_Timer(IMachine machine) : base(machine) { }
        private void OnLimitReached() { updateInterruptFlag = true; UpdateInterrupts(); }
    }
}
"""

GPIO = """\
namespace Antmicro.Renode.Peripherals.GPIOPort
{
    public class STM32_GPIOPort : BaseGPIOPort
    {
        // output data register drives the pins; the bit set/reset register sets them atomically
        private void WriteBsrr(uint value) { }
    }
}
"""

MANUAL = """\
# 27 Universal synchronous asynchronous receiver transmitter (USART)

27.1 USART introduction

The USART offers a flexible means of full-duplex data exchange with external equipment.

27.6.3 Baud rate register (USART_BRR)

DIV_Mantissa[11:0]: mantissa of USARTDIV. These 12 bits define the mantissa of the divider.

DIV_Fraction[3:0]: fraction of USARTDIV. These 4 bits define the fraction of the divider.

27.6.1 Status register (USART_SR)

TXE: transmit data register empty. Set by hardware when the content of the TDR register
has been transferred into the shift register. An interrupt is generated if TXEIE is set.
"""


@pytest.fixture(scope="module")
def usart1() -> RegisterMap:
    device = load_device(SVD_DIR / "STM32F103xx.svd")
    return next(m for m in device.register_maps() if m.peripheral == "USART1")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory, usart1: RegisterMap) -> Path:
    root = tmp_path_factory.mktemp("renode")
    peripherals = root / "src" / "Emulator" / "Peripherals"
    files = {
        "UART/STM32_UART.cs": UART,
        "Timers/STM32_Timer.cs": TIMER,
        "GPIOPort/STM32_GPIOPort.cs": GPIO,
        "Generated/USART1.cs": emit_model(usart1).source,
        "UART/bin/Debug/Copy.cs": UART,  # build output: passed over
    }
    for name, text in files.items():
        (peripherals / name).parent.mkdir(parents=True, exist_ok=True)
        (peripherals / name).write_text(text, encoding="utf-8")
    (root / "src" / "Emulator" / "Main").mkdir(parents=True)
    (root / "src" / "Emulator" / "Main" / "Machine.cs").write_text("class Machine {}")
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    home = tmp_path_factory.mktemp("home")
    with VectorStore.open(Settings(home=home, milvus_uri=None)) as vs:
        yield vs


@pytest.fixture(scope="module")
def ingested(store: VectorStore, checkout: Path) -> RenodeRetrieval:
    """The checkout ingested once per module (the retrieval holds no event-loop state)."""
    retrieval = RenodeRetrieval(store)
    report = asyncio.run(retrieval.ingest_examples(checkout))
    assert report.files == 4 and report.added == report.chunks > 4
    return retrieval


async def test_reingest_adds_nothing(ingested: RenodeRetrieval, checkout: Path) -> None:
    count = ingested.store.count(EXAMPLES)
    again = await ingested.ingest_examples(checkout)
    assert (again.added, again.removed) == (0, 0)
    assert again.skipped == again.chunks == count == ingested.store.count(EXAMPLES)


async def test_search_examples_finds_the_uart(ingested: RenodeRetrieval) -> None:
    hits = await ingested.search_examples("UART receive FIFO WriteChar", k=3)
    assert hits[0].source.endswith("UART/STM32_UART.cs")
    assert "STM32_UART" in hits[0].title and hits[0].text.startswith("// ")
    assert all("/bin/" not in h.source and "Machine.cs" not in h.source for h in hits)
    usart = await ingested.search_examples("DIV_Mantissa BRR Define", k=2)
    assert usart[0].source.endswith("Generated/USART1.cs")


async def test_changed_and_deleted_files(
    ingested: RenodeRetrieval, checkout: Path, tmp_path: Path
) -> None:
    root = tmp_path / "renode"
    gpio = root / "GPIO.cs"
    timer = root / "Timer.cs"
    root.mkdir()
    gpio.write_text(GPIO)
    timer.write_text(TIMER)
    first = await ingested.ingest_examples(root)
    assert first.added == 2
    gpio.write_text(GPIO.replace("atomically", "atomically, one bit per pin"))
    timer.unlink()
    report = await ingested.ingest_examples(root)
    assert (report.files, report.added, report.removed) == (1, 1, 2)
    assert str(timer) not in ingested.store.sources(EXAMPLES)
    hits = await ingested.search_examples("one bit per pin", k=1)
    assert hits[0].source == str(gpio)
    # the checkout's own files were left alone
    assert sum(str(checkout) in s for s in ingested.store.sources(EXAMPLES)) == 4


async def test_bad_example_paths(ingested: RenodeRetrieval, tmp_path: Path) -> None:
    with pytest.raises(RetrievalError, match="no such file or directory"):
        await ingested.ingest_examples(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RetrievalError, match="not a C# file"):
        await ingested.ingest_examples(tmp_path / "notes.txt")
    with pytest.raises(RetrievalError, match="holds no C# files"):
        await ingested.ingest_examples(tmp_path)


async def test_manual_ingest_and_search(ingested: RenodeRetrieval, tmp_path: Path) -> None:
    text = tmp_path / "rm0008.txt"
    text.write_text(MANUAL)
    report = await ingested.ingest_manual(text)
    assert report.files == 1 and report.added == report.chunks >= 3
    assert (await ingested.ingest_manual(text)).added == 0
    hits = await ingested.search_manual("baud rate divider mantissa", k=2)
    assert hits[0].title == "27.6.3 Baud rate register (USART_BRR)"
    assert "DIV_Mantissa" in hits[0].text


async def test_manual_bad_inputs(ingested: RenodeRetrieval, tmp_path: Path) -> None:
    pdf = tmp_path / "rm.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    with pytest.raises(RetrievalError, match="convert it to text"):
        await ingested.ingest_manual(pdf)
    with pytest.raises(RetrievalError, match="no such file"):
        await ingested.ingest_manual(tmp_path / "none.txt")
    (tmp_path / "empty.md").write_text("  \n")
    with pytest.raises(RetrievalError, match="is empty"):
        await ingested.ingest_manual(tmp_path / "empty.md")
    (tmp_path / "bin.txt").write_bytes(b"\0\1\2")
    with pytest.raises(RetrievalError, match="binary"):
        await ingested.ingest_manual(tmp_path / "bin.txt")
    with pytest.raises(RetrievalError, match="unsupported file type"):
        await ingested.ingest_manual(_touch(tmp_path / "data.bin"))


def _touch(path: Path) -> Path:
    path.write_text("x")
    return path


async def test_context_for_a_register_map(
    ingested: RenodeRetrieval, usart1: RegisterMap, tmp_path: Path
) -> None:
    text = tmp_path / "manual.md"
    text.write_text(MANUAL)
    await ingested.ingest_manual(text)
    block = await ingested.context_for(usart1, k=3, max_chars=2500)
    assert len(block) <= 2500
    assert block.startswith("## Existing Renode peripheral models")
    assert "USART1.cs" in block
    assert "## Datasheet excerpts" in block or len(block) > 2000
    small = await ingested.context_for("STM32_UART", k=2, max_chars=600)
    assert 0 < len(small) <= 600 and "STM32_UART" in small
    with pytest.raises(RetrievalError, match="peripheral name"):
        await ingested.context_for("  ")


async def test_unknown_collection_and_empty_results(ingested: RenodeRetrieval) -> None:
    with pytest.raises(RetrievalError, match="unknown collection"):
        await ingested.search("other", "x")
    assert await ingested.search_examples("zzzqqq nothingmatches", k=2) == []


def _hash_embedder(dim: int = 16) -> tuple[list[int], Embedder]:
    """A deterministic bag-of-words embedder (no model): one bucket per hashed word."""
    calls: list[int] = []

    async def embed(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        out = []
        for text in texts:
            vec = [0.0] * dim
            for word in re.findall(r"\w+", text.lower()):
                vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
            out.append(vec)
        return out

    return calls, embed


async def test_dense_vectors_from_an_embedder(checkout: Path, tmp_path: Path) -> None:
    calls, embed = _hash_embedder()
    with VectorStore.open(Settings(home=tmp_path, milvus_uri=None)) as store:
        dense = RenodeRetrieval(store, embed=embed, embed_model="test:hash")
        report = await dense.ingest_examples(checkout)
        assert report.added == report.chunks and store.dense_dim(EXAMPLES) == 16
        assert store.dense_model(EXAMPLES) == "test:hash"
        hits = await dense.search_examples("UART receive FIFO WriteChar", k=2)
        assert hits[0].source.endswith("STM32_UART.cs")
        assert calls[-1] == 1  # the query was embedded too (hybrid search)
        plain = RenodeRetrieval(store)
        with pytest.raises(RetrievalError, match="built with embeddings from test:hash"):
            await plain.ingest_examples(checkout)
        assert (await plain.search_examples("WriteChar", k=1))[0].source.endswith("UART.cs")


def test_fetch_context_for_the_agent_loop(tmp_path: Path, checkout: Path) -> None:
    """The blocking entry the workflow calls in a worker thread: '' on a fresh home (and no
    store created), the prompt block once examples were ingested."""
    settings = Settings(home=tmp_path / "home", milvus_uri=None)
    assert fetch_context("USART1 serial", settings=settings) == ""
    assert not (tmp_path / "home").exists()
    with VectorStore.open(settings) as store:
        asyncio.run(RenodeRetrieval(store).ingest_examples(checkout / "src"))
    block = fetch_context("STM32_UART receive", settings=settings, max_chars=1500)
    assert "STM32_UART" in block and len(block) <= 1500
