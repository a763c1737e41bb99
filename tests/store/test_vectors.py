"""The vector store on a real Milvus Lite directory: BM25 ranking, idempotent adds, replacing
and deleting a source, hybrid (BM25 + dense, RRF) search, and clear errors for a store that
cannot be opened. One store per module: opening Milvus Lite takes about a second."""

from __future__ import annotations

import fcntl
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbor.core.config import Settings
from arbor.core.errors import ConfigError
from arbor.store.vectors import Chunk, VectorStore, VectorStoreError

DOCS = {
    "uart.cs": "UART baud rate register BRR holds the divider mantissa and fraction",
    "gpio.cs": "GPIO port output data register ODR drives the pins",
    "timer.cs": "Timer prescaler PSC and auto-reload register ARR set the update period",
    "usart_sr.cs": "USART status register flags TXE and RXNE raise the interrupt",
}


def _settings(home: Path, uri: str | None = None) -> Settings:
    return Settings(home=home, milvus_uri=uri)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    with VectorStore.open(_settings(tmp_path_factory.mktemp("vectors"))) as vs:
        yield vs


@pytest.fixture
def docs(store: VectorStore, request: pytest.FixtureRequest) -> str:
    """A fresh BM25 collection holding DOCS, one chunk per source."""
    name = f"t_{request.node.name.replace('[', '_').replace(']', '_')}"[:60]
    store.ensure_collection(name)
    for source, text in DOCS.items():
        store.sync_source(name, source, [Chunk(text=text, source=source, kind="doc")])
    return name


def test_creating_and_filling_a_collection_logs_no_errors(
    store: VectorStore, caplog: pytest.LogCaptureFixture
) -> None:
    """pymilvus's index wait calls an RPC Milvus Lite lacks; its server logs a traceback."""
    with caplog.at_level("WARNING"):
        store.ensure_collection("quiet")
        store.sync_source("quiet", "q.cs", [Chunk(text="quiet text", source="q.cs")])
        assert store.search("quiet", "quiet", k=1)[0].source == "q.cs"
        assert store.sources("quiet") == {"q.cs"}
    assert [r.getMessage() for r in caplog.records] == []


def test_bm25_ranks_the_relevant_chunk_first(store: VectorStore, docs: str) -> None:
    hits = store.search(docs, "baud rate divider", k=3)
    assert hits[0].source == "uart.cs"
    assert hits[0].kind == "doc" and hits[0].score > 0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert store.search(docs, "   ", k=3) == []
    with pytest.raises(ValueError, match="k must be"):
        store.search(docs, "uart", k=0)


def test_adding_the_same_chunks_again_adds_nothing(store: VectorStore, docs: str) -> None:
    chunks = [Chunk(text=t, source=s) for s, t in DOCS.items()]
    before = store.count(docs)
    result = store.add(docs, chunks)
    assert (result.added, result.skipped) == (0, len(DOCS))
    assert store.count(docs) == before == len(DOCS)
    again = store.sync_source(docs, "uart.cs", [Chunk(text=DOCS["uart.cs"], source="uart.cs")])
    assert (again.added, again.skipped, again.removed) == (0, 1, 0)


def test_sync_replaces_a_changed_source_and_delete_removes_it(
    store: VectorStore, docs: str
) -> None:
    new = [Chunk(text="UART data register DR", source="uart.cs", index=i) for i in range(2)]
    result = store.sync_source(docs, "uart.cs", new)  # two identical chunks stored once
    assert (result.added, result.skipped, result.removed) == (1, 0, 1)
    assert store.search(docs, "baud", k=3) == []
    assert store.sources(docs) == set(DOCS)
    assert store.delete_source(docs, "gpio.cs") == 1
    assert store.delete_source(docs, "gpio.cs") == 0
    assert store.count(docs) == len(DOCS) - 1
    assert "gpio.cs" not in store.sources(docs)
    with pytest.raises(ValueError, match="must come from"):
        store.sync_source(docs, "a.cs", [Chunk(text="x", source="b.cs")])


def test_a_source_name_with_quotes_is_matched_exactly(store: VectorStore, docs: str) -> None:
    odd = 'dir "x"\\y.cs'
    store.sync_source(docs, odd, [Chunk(text="odd quoting source", source=odd)])
    assert odd in store.sources(docs)
    assert store.delete_source(docs, odd) == 1


def test_hybrid_search_merges_bm25_and_dense_ranks(store: VectorStore) -> None:
    store.ensure_collection("hybrid", dense_dim=3, dense_model="test:embed")
    assert store.dense_dim("hybrid") == 3 and store.dense_model("hybrid") == "test:embed"
    rows = [
        ("a", "interrupt controller priority", [1.0, 0.0, 0.0]),
        ("b", "clock tree and interrupt enable", [0.0, 1.0, 0.0]),
        ("c", "watchdog reload key", [0.0, 0.9, 0.1]),
    ]
    store.add("hybrid", [Chunk(text=t, source=s, vector=v) for s, t, v in rows])
    # BM25 alone: both a and b mention "interrupt"; the vector points at b (and c)
    bm25 = store.search("hybrid", "interrupt", k=3)
    assert {h.source for h in bm25} == {"a", "b"}
    hybrid = store.search("hybrid", "interrupt", k=3, vector=[0.0, 1.0, 0.0])
    assert hybrid[0].source == "b"  # first in both lists
    assert {h.source for h in hybrid} == {"a", "b", "c"}
    with pytest.raises(ValueError, match="3-dimensional"):
        store.add("hybrid", [Chunk(text="no vector", source="d")])
    with pytest.raises(VectorStoreError, match="dimension 3, not 8"):
        store.ensure_collection("hybrid", dense_dim=8)
    store.ensure_collection("plain")
    assert store.dense_dim("plain") is None and store.dense_model("plain") == ""


def test_a_missing_collection_is_a_clear_error(store: VectorStore) -> None:
    with pytest.raises(VectorStoreError, match="no collection 'nothing'"):
        store.count("nothing")


def _lock_is_free(path: Path) -> bool:
    with (path / "LOCK").open("rb") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def test_stores_on_one_directory_share_it_and_the_last_close_releases_it(
    tmp_path: Path,
) -> None:
    first = VectorStore.open(_settings(tmp_path))
    second = VectorStore.open(_settings(tmp_path))
    first.ensure_collection("c")
    first.add("c", [Chunk(text="shared text", source="s")])
    first.close()
    first.close()  # closing twice is harmless
    assert not _lock_is_free(tmp_path / "milvus.db")
    assert second.count("c") == 1  # still served after the first store closed
    second.close()
    assert _lock_is_free(tmp_path / "milvus.db")  # the embedded server let go of it
    with pytest.raises(VectorStoreError, match="closed"):
        second.count("c")


def test_a_file_where_the_lite_directory_should_be(tmp_path: Path) -> None:
    (tmp_path / "milvus.db").write_text("not a directory")
    with pytest.raises(ConfigError, match="not a Milvus Lite data directory") as info:
        VectorStore.open(_settings(tmp_path))
    assert info.value.variable == "ARBOR_MILVUS_URI"


def test_an_unreachable_server_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://user:secret@127.0.0.1:{port}"
    with pytest.raises(ConfigError, match="ARBOR_MILVUS_URI") as info:
        VectorStore.open(_settings(tmp_path, uri), timeout=2)
    assert info.value.variable == "ARBOR_MILVUS_URI"
    assert "secret" not in str(info.value)


def test_a_lite_directory_locked_by_another_process(tmp_path: Path) -> None:
    """Milvus Lite is single-process; a held lock (here taken by hand, as another process's
    server would) gives a ConfigError saying so instead of milvus-lite's logged traceback."""
    lite = tmp_path / "milvus.db"
    lite.mkdir()
    with (lite / "LOCK").open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another process") as info:
            VectorStore.open(_settings(tmp_path))
    assert "ARBOR_MILVUS_URI" in str(info.value)
