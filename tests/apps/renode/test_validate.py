from __future__ import annotations

import pytest

from arbor.apps.renode.compile import CompileResult
from arbor.apps.renode.emitter import emit_model
from arbor.apps.renode.svd import SvdDevice
from arbor.apps.renode.validate import validate_many, validate_source


@pytest.mark.usefixtures("mcs")
def test_skeletons_score_one(devices: dict[str, SvdDevice]) -> None:
    device = devices["nrf52840"]
    models = [(m, emit_model(m)) for m in map(device.peripheral, ("UARTE0", "GPIOTE", "RTC0"))]
    for conf in validate_many(models):
        assert conf.passed and conf.confidence == 1.0
        assert conf.compile.detail == "0 compile error(s)"


def test_confidence_parts(devices: dict[str, SvdDevice]) -> None:
    regmap = devices["rp2040"].peripheral("UART0")
    source = emit_model(regmap).source
    clean = CompileResult(errors=())
    # a syntax error zeroes the confidence and says where
    broken = source.replace("DefineRegisters();", "DefineRegisters(;", 1)
    conf = validate_source(regmap, broken, CompileResult(errors=("14:30: error CS1525",)))
    assert conf.confidence == 0.0 and not conf.syntax.passed and conf.syntax.failures >= 1
    assert conf.syntax.problems[0].startswith("15:")
    assert conf.compile.problems == ("14:30: error CS1525",)
    # a wrong reset value: builds, but accuracy and confidence drop by the item's share
    wrong = source.replace('Define(this, 0x0, name: "UARTDR")', 'Define(this, 0x1, name: "UARTDR")')
    assert wrong != source
    conf = validate_source(regmap, wrong, clean)
    total = conf.accuracy.failures + int(conf.accuracy.detail.split("/")[0])
    assert conf.accuracy.failures == 1
    assert conf.accuracy.score == pytest.approx((total - 1) / total)
    assert conf.confidence == pytest.approx(0.8 * conf.accuracy.score + 0.2, abs=1e-6)
    assert not conf.passed
