from __future__ import annotations

from pathlib import Path

import pytest

from arbor.runtime.datasets import DatasetError, detect_format, read_dataset


def test_jsonl_rows_stream_and_a_malformed_row_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"q": 1}\n{oops\n\n"text"\n\xff\xfe\n[1, 2]\n')
    items = list(read_dataset(path))
    assert [i.item for i in items] == [0, 1, 2, 3, 4]
    assert items[0].input == {"q": 1} and items[0].error is None
    assert items[1].error is not None and items[1].error.startswith("row 2: invalid JSON:")
    assert items[2].input == "text"  # the blank line 3 is skipped, not an item
    assert items[3].error is not None and items[3].error.startswith("row 5: not UTF-8 text")
    assert items[4].input == [1, 2]


def test_csv_rows_are_mappings_of_the_header(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b'q,lang\nhello,en\n"a, quoted\nvalue",fr\nonly-one\n\xff,x\nlast,de\n')
    items = list(read_dataset(path))
    assert items[0].input == {"q": "hello", "lang": "en"}
    assert items[1].input == {"q": "a, quoted\nvalue", "lang": "fr"}
    assert items[2].error == "row 5: 1 fields, the header has 2"
    assert items[3].error is not None and items[3].error.startswith("row 6: not UTF-8 text")
    assert items[4].input == {"q": "last", "lang": "de"}


def test_unreadable_files_and_bad_headers_are_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read dataset"):
        read_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="from its name"):
        detect_format(tmp_path / "data.txt")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        detect_format(tmp_path / "data.csv", "xml")
    assert detect_format(tmp_path / "data.txt", "csv") == "csv"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,a\n1,2\n")
    with pytest.raises(DatasetError, match="distinct, non-empty"):
        list(read_dataset(bad))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert list(read_dataset(empty)) == []
