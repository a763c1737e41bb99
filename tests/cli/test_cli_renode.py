"""``arbor renode``: list, generate and eval from the command line; bad input exits 2 with
one line and no traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arbor.cli.main import app

SVD = Path(__file__).resolve().parents[1] / "data" / "svd"
runner = CliRunner()


@pytest.fixture
def mcs() -> None:
    """Like tests/apps/renode's fixture: required in CI, skipped locally when missing."""
    if shutil.which("mcs"):
        return
    message = "Mono's mcs is required: apt-get install mono-mcs (make test installs it)"
    if os.environ.get("ARBOR_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def test_listed_in_help() -> None:
    result = runner.invoke(app, ["renode", "--help"])
    assert result.exit_code == 0
    for command in ("list", "generate", "eval"):
        assert command in result.output


def test_generate_help_says_the_agents_come_later() -> None:
    result = runner.invoke(app, ["renode", "generate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "agentic refinement" in result.output and "not run here" in result.output


def test_list_table_and_json() -> None:
    result = runner.invoke(
        app, ["renode", "list", "--svd", str(SVD / "rp2040.svd")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "UART0" in result.output and "0x40034000" in result.output
    result = runner.invoke(app, ["renode", "list", "--json", "--svd", str(SVD / "rp2040.svd")])
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert len(rows) == 35
    uart = next(r for r in rows if r["id"] == "UART0")
    assert uart["base_address"] == "0x40034000" and uart["interrupts"] == ["UART0_IRQ@20"]


@pytest.mark.usefixtures("mcs")
def test_generate(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    result = runner.invoke(
        app,
        [
            "renode",
            "generate",
            "--svd",
            str(SVD / "nrf52840.svd"),
            "-p",
            "UARTE0",
            "--out",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "confidence 1.000" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "UARTE0.cs",
        "UARTE0.json",
        "UARTE0.repl",
        "UARTE0.robot",
    ]
    assert (out / "UARTE0.repl").read_text().startswith("uarte0: Generated.UARTE0 @ sysbus")


@pytest.mark.usefixtures("mcs")
def test_eval_named_peripherals(tmp_path: Path) -> None:
    out = tmp_path / "r" / "renode.json"
    result = runner.invoke(
        app,
        [
            "renode",
            "eval",
            "--svd",
            str(SVD / "STM32F103xx.svd"),
            "-p",
            "USART2",
            "-p",
            "SPI1",
            "--out",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["svds"][0]["passed"] == 2
    assert [r["peripheral"] for r in doc["svds"][0]["results"]] == ["USART2", "SPI1"]


def _one_line_error(args: list[str], reason: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], result.output
    assert "Traceback" not in result.output


def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.svd"
    bad.write_text("<device><name>x")
    stm = str(SVD / "STM32F103xx.svd")
    _one_line_error(["renode", "list", "--svd", str(tmp_path / "none.svd")], "SVD file not found")
    _one_line_error(["renode", "list", "--svd", str(bad)], "malformed SVD bad.svd")
    _one_line_error(
        ["renode", "generate", "--svd", stm, "-p", "UART9", "--out", str(tmp_path)],
        "unknown peripheral 'UART9'",
    )
    _one_line_error(["renode", "eval", "--svd", stm], "give either --all or --peripheral")
    _one_line_error(
        ["renode", "eval", "--svd", stm, "--all", "-p", "USART1"],
        "give either --all or --peripheral",
    )
    _one_line_error(["renode", "eval", "--svd", str(bad), "--all"], "malformed SVD")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(
        ["renode", "generate", "--svd", stm, "-p", "USART1", "--out", str(blocker)],
        "is not a directory",
    )


def test_missing_mcs_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    result = runner.invoke(
        app,
        [
            "renode",
            "generate",
            "--svd",
            str(SVD / "rp2040.svd"),
            "-p",
            "UART0",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1
    assert "mcs not found" in result.output


@pytest.mark.usefixtures("mcs")
def test_bench_renode_quick_writes_the_benchmark_document(tmp_path: Path) -> None:
    out = tmp_path / "renode.json"
    result = runner.invoke(app, ["bench", "renode", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["bench"] == "renode"
    assert {t["name"] for t in doc["targets"]} >= {"min_register_accuracy", "compile_errors"}
    assert all(t["met"] for t in doc["targets"]), doc["targets"]
