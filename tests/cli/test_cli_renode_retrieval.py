"""``arbor renode ingest-examples | ingest-manual | search`` against Milvus Lite under the
test's ARBOR_HOME: counts printed, re-ingest adds nothing, bad input exits 2 with one line."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arbor.cli.main import app

runner = CliRunner()

UART = """namespace Antmicro.Renode.Peripherals.UART
{
    public class LiteUart : UARTBase
    {
        // baud rate divider and receive fifo
        public override void WriteChar(byte value) { fifo.Enqueue(value); }
    }
}
"""
TIMER = """namespace Antmicro.Renode.Peripherals.Timers
{
    public class LiteTimer : LimitTimer
    {
        // prescaler and compare interrupt
        private void OnCompare() { }
    }
}
"""


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    (root / "LiteUart.cs").write_text(UART)
    (root / "LiteTimer.cs").write_text(TIMER)
    return root


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["renode", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_help_lists_the_commands() -> None:
    code, out = _invoke("--help")
    assert code == 0
    for command in ("ingest-examples", "ingest-manual", "search"):
        assert command in out


def test_ingest_twice_then_search(models: Path) -> None:
    code, out = _invoke("ingest-examples", str(models))
    assert code == 0, out
    assert "files 2, chunks added 2, skipped as duplicates 0, removed 0" in out
    code, out = _invoke("ingest-examples", str(models))
    assert code == 0, out
    assert "files 2, chunks added 0, skipped as duplicates 2, removed 0" in out
    code, out = _invoke("search", "receive fifo WriteChar", "-k", "1")
    assert code == 0, out
    assert "LiteUart.cs" in out and "LiteTimer.cs" not in out
    code, out = _invoke("search", "prescaler compare", "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert rows[0]["source"].endswith("LiteTimer.cs") and rows[0]["score"] > 0
    assert set(rows[0]) == {"score", "source", "title", "text"}


def test_ingest_manual_and_search_it(tmp_path: Path) -> None:
    text = tmp_path / "manual.txt"
    text.write_text("BAUD RATE REGISTER\n\nThe divider sets the baud rate of the UART.\n")
    code, out = _invoke("search", "divider", "--collection", "manual")
    assert code == 0 and "no hits in manual" in out
    code, out = _invoke("ingest-manual", str(text))
    assert code == 0, out
    assert "files 1, chunks added 1" in out
    code, out = _invoke("search", "divider", "-c", "manual")
    assert code == 0 and "BAUD RATE REGISTER" in out


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("ingest-examples", "/nonexistent/renode"), "no such file or directory"),
        (("ingest-manual", "/nonexistent/rm.txt"), "no such file"),
        (("search", "x", "--collection", "other"), "must be examples or manual"),
        (("search", "  "), "non-empty QUERY"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], reason: str) -> None:
    code, out = _invoke(*args)
    assert code == 2, out
    assert reason in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


def test_a_pdf_says_to_convert_it(tmp_path: Path) -> None:
    pdf = tmp_path / "rm.pdf"
    pdf.write_bytes(b"%PDF-1.7\n")
    code, out = _invoke("ingest-manual", str(pdf))
    assert code == 2 and "convert it to text" in out


def test_an_unreachable_milvus_server(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("ARBOR_MILVUS_URI", f"http://127.0.0.1:{port}")
    code, out = _invoke("ingest-examples", str(models))
    assert code == 2, out
    assert "ARBOR_MILVUS_URI" in out and "Traceback" not in out


async def test_embeddings_through_the_llm_client(models: Path, tmp_path: Path) -> None:
    """--embeddings MODEL: vectors come from LLMClient.embed (here the mock upstream over
    HTTP), the collection records the model, and searches with it are hybrid."""
    from arbor.apps.renode.retrieval import EXAMPLES, RenodeRetrieval
    from arbor.cli.renode_retrieval import _with_retrieval
    from arbor.core.config import load_settings
    from arbor.testing.mock_upstream import MockConfig, MockUpstream

    async with MockUpstream(MockConfig(port=0)) as mock:
        settings = load_settings(
            home=tmp_path / "home",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'arbor.db'}",
            providers={"mock": {"base_url": mock.url, "api_key": "sk-test-0123456789"}},
            llm={"cache": {"enabled": False}},
        )

        async def ingest(r: RenodeRetrieval) -> tuple[int, str, int | None]:
            report = await r.ingest_examples(models)
            return report.added, r.store.dense_model(EXAMPLES), r.store.dense_dim(EXAMPLES)

        added, model, dim = await _with_retrieval(settings, "mock:embed-small", ingest)
        assert added == 2 and model == "mock:embed-small" and dim

        async def search(r: RenodeRetrieval) -> list[str]:
            return [h.source for h in await r.search(EXAMPLES, "receive fifo WriteChar", 2)]

        sources = await _with_retrieval(settings, "mock:embed-small", search)
        assert sources[0].endswith("LiteUart.cs")
        assert len(sources) == 2  # the dense side ranks every chunk, so both are hits
