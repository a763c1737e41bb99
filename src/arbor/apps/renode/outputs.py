"""What ``generate`` writes next to the model: a ``.repl`` snippet attaching it to a platform,
a Robot Framework test of its reset values and read/write fields (parsed by robotframework, so
its syntax is proven here, not in Renode later), and the pieces of the JSON report."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from robot.api import get_model
from robot.running import TestSuite

from arbor.apps.renode.emitter import EmittedModel
from arbor.apps.renode.names import irq_properties, sanitize
from arbor.apps.renode.regmap import FieldMode, Register, RegisterMap

__all__ = ["RobotCheck", "check_robot", "repl_snippet", "repl_type", "robot_suite"]

_RW = frozenset({FieldMode.READ, FieldMode.WRITE})
_PATTERN = 0xA5A5A5A5
_INTERRUPT_CONTROLLER = "nvic"


def repl_type(model: EmittedModel) -> str:
    """Type as a .repl names it: relative to ``Antmicro.Renode.Peripherals``."""
    return model.full_type.removeprefix("Antmicro.Renode.Peripherals.")


def repl_snippet(regmap: RegisterMap, model: EmittedModel) -> str:
    """``name: Namespace.Type @ sysbus <base, +size>`` and one ``-> nvic@N`` per interrupt."""
    name = sanitize(regmap.peripheral).lower()
    where = f"<0x{regmap.base_address:08X}, +0x{regmap.size:X}>"
    lines = [f"{name}: {repl_type(model)} @ sysbus {where}"]
    irqs = irq_properties(regmap)
    for prop, irq in irqs:
        source = "" if len(irqs) == 1 else f"{prop} "
        lines.append(f"    {source}-> {_INTERRUPT_CONTROLLER}@{irq.value}")
    return "\n".join(lines) + "\n"


def _masks(reg: Register) -> tuple[int, int, int] | None:
    """(readable, read-write, read-only) masks of a register whose fields have no side
    effects, or None when a field clears/sets/toggles on access."""
    readable = rw = ro = 0
    fields = [(f.mask, frozenset(f.modes)) for f in reg.fields]
    if not fields:
        whole = (1 << reg.width) - 1
        access = ((FieldMode.READ, reg.access.readable), (FieldMode.WRITE, reg.access.writable))
        fields = [(whole, frozenset(m for m, on in access if on))]
    for mask, modes in fields:
        if not modes <= _RW:
            return None
        if FieldMode.READ in modes:
            readable |= mask
            if FieldMode.WRITE in modes:
                rw |= mask
            else:
                ro |= mask
    return readable, rw, ro


def robot_suite(regmap: RegisterMap, model: EmittedModel) -> str:
    """A Renode Robot suite: each register reads its reset value; read-write fields keep what
    is written. Registers with side-effect fields (W1C, read-to-clear...) are left to the
    behaviour tests the agents write."""
    base = regmap.base_address
    place = repl_snippet(regmap, model).splitlines()[0]
    resets: list[str] = []
    writes: list[str] = []
    for reg in regmap.registers:
        masks = _masks(reg)
        if masks is None:
            continue
        readable, rw, ro = masks
        address = f"0x{base + reg.offset:08X}"
        if readable and not reg.reset_value & ~readable:
            resets.append(f"    Register Should Read    {address}    0x{reg.reset_value:X}")
        if rw:
            value = _PATTERN & rw
            expected = value | (reg.reset_value & ro)
            writes.append(f"    Execute Command    sysbus WriteDoubleWord {address} 0x{value:X}")
            writes.append(f"    Register Should Read    {address}    0x{expected:X}")
    lines = [
        "*** Settings ***",
        f"Documentation       {regmap.device} {regmap.peripheral}: reset values and read-write"
        " fields of the generated model.",
        "Suite Setup         Setup",
        "Suite Teardown      Teardown",
        "Test Setup          Create Machine",
        "Test Teardown       Test Teardown",
        "Resource            ${RENODEKEYWORDS}",
        "",
        "*** Variables ***",
        f"${{MODEL}}            ${{CURDIR}}/{model.file_name}",
        f"${{PLATFORM}}         {place}",
        "",
        "*** Keywords ***",
        "Create Machine",
        "    Execute Command    include @${MODEL}",
        "    Execute Command    mach create",
        '    Execute Command    machine LoadPlatformDescriptionFromString "${PLATFORM}"',
        "",
        "Register Should Read",
        "    [Arguments]    ${address}    ${expected}",
        "    ${value}=    Execute Command    sysbus ReadDoubleWord ${address}",
        "    Should Be Equal As Integers    ${value}    ${expected}",
        "",
        "*** Test Cases ***",
        "Registers Should Have Their Reset Values",
        *(resets or ["    Log    no side-effect-free readable register"]),
        "",
        "Read-Write Fields Should Keep Written Values",
        *(writes or ["    Log    no side-effect-free read-write field"]),
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class RobotCheck:
    tests: int
    errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors and self.tests > 0


def check_robot(text: str) -> RobotCheck:
    """Parse a suite with robotframework's own parser; every parse error is reported."""
    model = get_model(text)
    errors: list[str] = []
    for node in ast.walk(model):
        line = getattr(node, "lineno", "?")
        if type(node).__name__ == "InvalidSection":
            errors.append(f"line {line}: unrecognised section header")
        for error in getattr(node, "errors", ()) or ():
            errors.append(f"line {line}: {error}")
    if errors:  # building a suite from a broken model would also log each error to stderr
        tests = sum(type(node).__name__ == "TestCase" for node in ast.walk(model))
        return RobotCheck(tests=tests, errors=tuple(errors))
    return RobotCheck(tests=len(TestSuite.from_model(model).tests), errors=())
