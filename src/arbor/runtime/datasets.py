"""Reading a batch's dataset: JSONL or CSV (header row), streamed row by row.

A row that cannot be read is not an error of the whole file: it becomes a
:class:`~arbor.store.batches.NewItem` with a reason (``row 17: invalid JSON: ...``) that is
stored as a failed item, and the rows around it still run. Only a file that cannot be opened
at all, or has an unknown format, raises :class:`DatasetError`. Row numbers are the file's
line numbers (1-based; for CSV the header is line 1), which is what a user looks up.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from arbor.core.errors import ArborError
from arbor.store.batches import NewItem

__all__ = ["DatasetError", "DatasetFormat", "detect_format", "read_dataset"]

DatasetFormat = Literal["jsonl", "csv"]
_SUFFIXES: dict[str, DatasetFormat] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


class DatasetError(ArborError):
    """The dataset file cannot be read at all (missing, unreadable, unknown format)."""

    kind = "dataset"

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


def detect_format(path: Path, given: str | None = None) -> DatasetFormat:
    """``given`` if set, else by the file's suffix (.jsonl, .ndjson, .csv)."""
    if given is not None:
        if given not in ("jsonl", "csv"):
            raise DatasetError(f"unknown dataset format {given!r}; use jsonl or csv")
        return "jsonl" if given == "jsonl" else "csv"
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise DatasetError(
            f"cannot tell the format of {str(path)!r} from its name; "
            "name it .jsonl or .csv (or pass the format)",
            path=str(path),
        )
    return found


def read_dataset(path: Path, fmt: DatasetFormat | None = None) -> Iterator[NewItem]:
    """Items in file order, numbered from 0; opened at once so a missing file fails now."""
    chosen = detect_format(path, fmt)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DatasetError(
            f"cannot read dataset {str(path)!r}: {exc.strerror}", path=str(path)
        ) from None
    return _jsonl(handle) if chosen == "jsonl" else _csv(handle, path)


def _lines(handle: BinaryIO) -> Iterator[tuple[int, str | None, str]]:
    """``(line number, text or None, why not)`` per line: one bad line's encoding stays
    that line's problem."""
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8"), ""
            except UnicodeDecodeError as exc:
                yield number, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"


def _jsonl(handle: BinaryIO) -> Iterator[NewItem]:
    index = 0
    for number, line, why in _lines(handle):
        if line is None:
            yield NewItem(index, error=f"row {number}: {why}")
        elif not line.strip():
            continue
        else:
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                reason = f"row {number}: invalid JSON: {exc.msg} (column {exc.colno})"
                yield NewItem(index, error=reason)
            else:
                yield NewItem(index, value)
        index += 1


def _csv(handle: BinaryIO, path: Path) -> Iterator[NewItem]:
    bad: dict[int, str] = {}

    def text() -> Iterator[str]:
        for number, line, why in _lines(handle):
            if line is None:
                bad[number] = why
                yield "\n"  # keeps the reader's line count; reported below
            else:
                yield line

    reader = csv.reader(text())
    names = _header(reader, path)
    if names is None:
        return
    index = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield NewItem(index, error=f"row {reader.line_num}: unreadable CSV: {exc}")
            index += 1
            continue
        number = reader.line_num
        if number in bad:
            yield NewItem(index, error=f"row {number}: {bad.pop(number)}")
        elif not row:
            continue
        elif len(row) != len(names):
            reason = f"row {number}: {len(row)} fields, the header has {len(names)}"
            yield NewItem(index, error=reason)
        else:
            yield NewItem(index, dict(zip(names, row, strict=True)))
        index += 1


def _header(reader: Iterator[list[str]], path: Path) -> list[str] | None:
    """The column names (None for an empty file); DatasetError if they are unusable."""
    try:
        header = next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        raise DatasetError(f"{str(path)!r}: unreadable CSV header: {exc}", path=str(path)) from None
    names = [h.strip() for h in header]
    if not all(names) or len(set(names)) != len(names):
        raise DatasetError(
            f"{str(path)!r}: the CSV header needs distinct, non-empty column names, got {names}",
            path=str(path),
        )
    return names
