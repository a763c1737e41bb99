from __future__ import annotations

import json
from pathlib import Path

import pytest
from _renode_data import SVD_DIR, SVD_NAMES
from typer.testing import CliRunner

from arbor.apps.renode.pipeline import evaluate, generate
from arbor.apps.renode.regmap import RenodeError
from arbor.cli.main import app

pytestmark = pytest.mark.usefixtures("mcs")

# A handful per SVD: clusters, cluster arrays, enums, many interrupts, derived peripherals.
SAMPLE = {
    "STM32F103xx": ["USART1", "TIM1", "GPIOB", "RCC", "ADC1"],
    "nrf52840": ["UARTE0", "PPI", "GPIOTE", "RADIO", "P1"],
    "rp2040": ["DMA", "UART0", "IO_BANK0", "PIO0", "USBCTRL_REGS"],
}


def test_generate_writes_the_four_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out" / "usart"
    report = generate(SVD_DIR / "STM32F103xx.svd", "usart1", out)
    assert sorted(p.name for p in out.iterdir()) == [
        "USART1.cs",
        "USART1.json",
        "USART1.repl",
        "USART1.robot",
    ]
    assert report.confidence.confidence == 1.0 and report.robot_errors == []
    saved = json.loads((out / "USART1.json").read_text())
    assert saved["confidence"]["accuracy"]["score"] == 1.0
    assert saved["interrupts"] == ["USART1@37"]
    assert saved["stage"].startswith("deterministic skeleton")
    assert (out / "USART1.cs").read_text().startswith("// STM32F103xx USART1")


def test_generate_refuses_a_file_as_output_dir(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(RenodeError, match="is not a directory"):
        generate(SVD_DIR / "rp2040.svd", "UART0", target)


@pytest.mark.parametrize("svd", SVD_NAMES)
def test_sample_peripherals_pass_every_validator(svd: str) -> None:
    result = evaluate(SVD_DIR / f"{svd}.svd", SAMPLE[svd])
    assert [p.peripheral for p in result.peripherals] == SAMPLE[svd]
    assert result.passed == len(SAMPLE[svd])
    for p in result.peripherals:
        assert (p.accuracy, p.syntax_errors, p.compile_errors, p.confidence) == (1.0, 0, 0, 1.0)
        assert p.registers > 0 and p.seconds > 0


def test_a_map_the_skeleton_cannot_express_fails_alone(tmp_path: Path) -> None:
    svd = tmp_path / "wide.svd"
    svd.write_text(
        "<device><name>D</name><width>32</width><size>32</size><peripherals>"
        "<peripheral><name>WIDE</name><baseAddress>0x1000</baseAddress><registers>"
        "<register><name>R</name><addressOffset>0</addressOffset><size>64</size></register>"
        "</registers></peripheral>"
        "<peripheral><name>OK</name><baseAddress>0x2000</baseAddress><registers>"
        "<register><name>R</name><addressOffset>0</addressOffset></register>"
        "</registers></peripheral></peripherals></device>"
    )
    result = evaluate(svd, ["wide", "ok"])
    assert [p.peripheral for p in result.peripherals] == ["WIDE", "OK"]
    wide, ok = result.peripherals
    assert wide.confidence == 0.0 and wide.error is not None and "64 bits" in wide.error
    assert ok.confidence == 1.0 and ok.error is None
    assert result.passed == 1


@pytest.mark.slow
def test_eval_all_three_svds(tmp_path: Path) -> None:
    """The acceptance: every peripheral of the three SVDs, accuracy 1.0, no syntax or compile
    errors (one mcs run per SVD)."""
    out = tmp_path / "renode.json"
    args = ["renode", "eval", "--all", "--out", str(out)]
    for name in SVD_NAMES:
        args += ["--svd", str(SVD_DIR / f"{name}.svd")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["bench"] == "renode"
    assert [(s["svd"], s["peripherals"], s["passed"]) for s in doc["svds"]] == [
        ("STM32F103xx.svd", 53, 53),
        ("nrf52840.svd", 73, 73),
        ("rp2040.svd", 35, 35),
    ]
    assert doc["peripherals"] == doc["passed"] == 161
    assert all(t["met"] for t in doc["targets"])
    assert doc["seconds_per_peripheral"] > 0
    assert "nrf52840" in result.output and f"wrote {out}" in result.output
