from __future__ import annotations

import pytest

from arbor.apps.renode.names import NameScope, class_name, irq_properties, sanitize
from arbor.apps.renode.regmap import Interrupt, RegisterMap


@pytest.mark.parametrize(
    ("svd", "csharp"),
    [
        ("CR1", "CR1"),
        ("CH[0]_CNF", "CH0_CNF"),
        ("TASKS_CHG[1]_EN", "TASKS_CHG1_EN"),
        ("DEVICEID%s", "DEVICEID"),
        ("3DES", "_3DES"),
        ("class", "class_"),
        ("a-b.c d", "a_b_c_d"),
        ("[]", "_"),
    ],
)
def test_sanitize(svd: str, csharp: str) -> None:
    assert sanitize(svd) == csharp


def test_scope_never_hands_out_a_name_twice() -> None:
    scope = NameScope({"Registers"})
    names = [scope.take(n) for n in ("A[0]", "A0", "A0", "Registers", "A0_2")]
    assert names == ["A0", "A0_2", "A0_3", "Registers_2", "A0_2_2"]
    assert len(set(names)) == len(names)


def _map(name: str, irqs: list[tuple[str, int]]) -> RegisterMap:
    return RegisterMap(
        device="D",
        peripheral=name,
        base_address=0,
        size=0x100,
        interrupts=tuple(Interrupt(name=n, value=v) for n, v in irqs),
    )


def test_class_name_stays_off_the_renode_api() -> None:
    assert class_name(_map("USART1", [])) == "USART1"
    assert class_name(_map("GPIO", [])) == "GPIO_Model"  # would shadow the GPIO type
    assert class_name(_map("Size", [])) == "Size_Model"


def test_irq_properties() -> None:
    assert [n for n, _ in irq_properties(_map("U", [("U", 3)]))] == ["IRQ"]
    names = [n for n, _ in irq_properties(_map("T", [("T_BRK", 24), ("T_UP", 25)]))]
    assert names == ["IRQ", "T_UP_IRQ"]
