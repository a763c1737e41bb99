from __future__ import annotations

from pathlib import Path

from arbor.apps.renode.emitter import emit_model
from arbor.apps.renode.outputs import check_robot, repl_snippet, robot_suite
from arbor.apps.renode.svd import SvdDevice, load_device


def test_repl_snippet_one_and_many_interrupts(devices: dict[str, SvdDevice]) -> None:
    usart = devices["STM32F103xx"].peripheral("USART1")
    assert repl_snippet(usart, emit_model(usart)) == (
        "usart1: Generated.USART1 @ sysbus <0x40013800, +0x400>\n    -> nvic@37\n"
    )
    tim1 = devices["STM32F103xx"].peripheral("TIM1")
    assert repl_snippet(tim1, emit_model(tim1)).splitlines() == [
        "tim1: Generated.TIM1 @ sysbus <0x40012C00, +0x400>",
        "    IRQ -> nvic@24",
        "    TIM1_UP_TIM10_IRQ -> nvic@25",
        "    TIM1_TRG_COM_TIM11_IRQ -> nvic@26",
        "    TIM1_CC_IRQ -> nvic@27",
    ]
    gpioa = devices["STM32F103xx"].peripheral("GPIOA")
    assert repl_snippet(gpioa, emit_model(gpioa)).count("\n") == 1  # no interrupt, no wiring


def test_robot_suite_checks_resets_and_rw_fields(small_svd: Path) -> None:
    regmap = load_device(small_svd).peripheral("TIMER0")
    text = robot_suite(regmap, emit_model(regmap))
    check = check_robot(text)
    assert check.ok and check.tests == 2
    # CTRL: EN/MODE read-write, PRESC read-only; reset 0x5 lies in readable bits
    assert "    Register Should Read    0x40000000    0x5" in text
    pattern = 0xA5A5A5A5 & 0xF  # EN|MODE bits
    assert f"sysbus WriteDoubleWord 0x40000000 0x{pattern:X}" in text
    assert f"    Register Should Read    0x40000000    0x{pattern:X}" in text
    # STATUS has write-one-to-clear and read-to-clear fields: left to behaviour tests
    assert "0x40000004" not in text
    assert "0x40000154" in text  # nested cluster register
    assert 'LoadPlatformDescriptionFromString "${PLATFORM}"' in text
    assert "${CURDIR}/TIMER0.cs" in text


def test_robot_parse_errors_are_reported() -> None:
    check = check_robot("*** Test Cases ***\nX\n    [Foo]    bar\n*** Bogus ***\n")
    assert not check.ok
    assert check.errors == (
        "line 4: unrecognised section header",
        "line 3: Non-existing setting 'Foo'.",
    ) or set(check.errors) == {
        "line 4: unrecognised section header",
        "line 3: Non-existing setting 'Foo'.",
    }
    assert not check_robot("*** Settings ***\nDocumentation    none\n").ok  # no tests
