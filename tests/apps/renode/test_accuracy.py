"""The accuracy and conventions checks read the C#: every kind of damage to a correct model
is caught and costs exactly the items it breaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbor.apps.renode.accuracy import check_accuracy, check_conventions
from arbor.apps.renode.csharp import read_model
from arbor.apps.renode.emitter import emit_model
from arbor.apps.renode.regmap import RegisterMap
from arbor.apps.renode.svd import load_device

# TIMER0 of the small SVD: 10 registers + 1 alias + 9 fields.
TOTAL = 20


@pytest.fixture
def timer(small_svd: Path) -> tuple[RegisterMap, str]:
    regmap = load_device(small_svd).peripheral("TIMER0")
    return regmap, emit_model(regmap).source


def test_skeleton_is_fully_accurate(timer: tuple[RegisterMap, str]) -> None:
    regmap, src = timer
    acc = check_accuracy(regmap, read_model(src))
    assert (acc.matched, acc.total, acc.score, acc.mismatches) == (TOTAL, TOTAL, 1.0, ())
    conv = check_conventions(regmap, read_model(src))
    assert conv.failed == () and conv.score == 1.0
    assert "GPIO IRQ for TIMER0" in conv.passed


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("STATUS = 0x4,", "STATUS = 0x8,", "STATUS: offset 0x8, expected 0x4"),
        ("CTRL.Define(this, 0x5,", "CTRL.Define(this, 0x6,", "CTRL: reset 0x6, expected 0x5"),
        ("(8, 8, FieldMode.Read, name", "(8, 7, FieldMode.Read, name", "CTRL.PRESC: bits (8, 7)"),
        (
            "FieldMode.Read | FieldMode.WriteOneToClear",
            "FieldMode.Read | FieldMode.Write",
            "STATUS.IRQ: bits (0, 1) modes ['Read', 'Write'], expected (0, 1) ['Read', 'Write",
        ),
        (
            '.WithFlag(1, FieldMode.Read | FieldMode.ReadToClear, name: "DONE")',
            "",
            "STATUS.DONE: missing",
        ),
        ('name: "EN")', 'name: "ENABLE")', "CTRL.EN: missing"),
        ("ALT = 0x0,", "", "ALT (alias): no enum member at its offset"),
        ('name: "FLAGS")', "", "FLAGS: no Define chain"),
    ],
)
def test_each_damage_costs_its_items(
    timer: tuple[RegisterMap, str], old: str, new: str, problem: str
) -> None:
    regmap, src = timer
    assert src.count(old) == 1
    acc = check_accuracy(regmap, read_model(src.replace(old, new)))
    lost = 5 if problem.startswith("FLAGS") else 1  # FLAGS' chain holds its 4 fields too
    assert acc.matched == TOTAL - lost and acc.total == TOTAL
    assert acc.score == pytest.approx((TOTAL - lost) / TOTAL)
    assert any(m.startswith(problem) for m in acc.mismatches), acc.mismatches


@pytest.mark.parametrize(
    ("old", "new", "failed"),
    [
        ("Size => 0x800;", "Size => 0x100;", "size covers the map: Size 0x100 < 0x158"),
        ("public GPIO IRQ", "public GPIO Irq", "GPIO IRQ for TIMER0: property missing"),
        ("STATUS = 0x4,", "STATUS = 0x0,", "one Define per offset: CTRL and STATUS at 0x0"),
        (
            ".WithReservedBits(4, 4)",
            ".WithReservedBits(3, 5)",
            "fields disjoint within 32 bits: CTRL: WithReservedBits(3, 5)",
        ),
        (
            ".WithReservedBits(16, 16)",
            ".WithReservedBits(16, 17)",
            "fields disjoint within 32 bits: CTRL: WithReservedBits(16, 17)",
        ),
    ],
)
def test_conventions_fail_on_damage(
    timer: tuple[RegisterMap, str], old: str, new: str, failed: str
) -> None:
    regmap, src = timer
    conv = check_conventions(regmap, read_model(src.replace(old, new)))
    assert conv.failed == (failed,)
    assert conv.score == pytest.approx(len(conv.passed) / (len(conv.passed) + 1))


def test_peripheral_without_interrupts_needs_no_gpio(small_svd: Path) -> None:
    regmap = load_device(small_svd).peripheral("TIMER0").model_copy(update={"interrupts": ()})
    src = emit_model(regmap).source
    assert "GPIO" not in src.split("private void DefineRegisters")[0].split("Size")[1]
    assert check_conventions(regmap, read_model(src)).failed == ()
