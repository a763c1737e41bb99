"""Valid, collision-free C# identifiers for SVD names (SVD allows ``CH[0]``, ``%s``, digits
first, C# keywords). One :class:`NameScope` per C# scope, so two SVD names never collide."""

from __future__ import annotations

import re

from arbor.apps.renode.regmap import Interrupt, RegisterMap

__all__ = ["CSHARP_KEYWORDS", "NameScope", "class_name", "irq_properties", "sanitize"]

CSHARP_KEYWORDS = frozenset(
    """abstract as base bool break byte case catch char checked class const continue decimal
    default delegate do double else enum event explicit extern false finally fixed float for
    foreach goto if implicit in int interface internal is lock long namespace new null object
    operator out override params private protected public readonly ref return sbyte sealed
    short sizeof stackalloc static string struct switch this throw true try typeof uint ulong
    unchecked unsafe ushort using virtual void volatile while""".split()
)

# Type and member names a generated class refers to or declares: a class or member with one
# of these names would shadow the Renode API (a class named ``GPIO`` breaks ``GPIO IRQ``).
_CLASS_RESERVED = frozenset(
    """BasicDoubleWordPeripheral BasicDoubleWordPeripheralExtensions DefaultInterrupt
    DefaultInterruptAttribute DefineRegisters DoubleWordRegister DoubleWordRegisterCollection
    FieldMode GPIO IGPIO IKnownSize IMachine IRQ Machine PeripheralRegister Read Registers
    RegistersCollection Reset Size System UpdateInterrupts Write""".split()
)

_INVALID = re.compile(r"[^0-9A-Za-z_]+")


def sanitize(name: str) -> str:
    """``CH[0]_CNF`` → ``CH0_CNF``; digits first get ``_``; keywords get a trailing ``_``."""
    text = name.replace("%s", "").replace("[", "").replace("]", "")
    text = _INVALID.sub("_", text).strip("_") or "_"
    if text[0].isdigit():
        text = "_" + text
    if text in CSHARP_KEYWORDS:
        text += "_"
    return text


class NameScope:
    """Hands out unique identifiers within one C# scope (``X``, then ``X_2``, ``X_3``...)."""

    def __init__(self, reserved: frozenset[str] | set[str] = frozenset()) -> None:
        self._taken: set[str] = set(reserved)

    def take(self, name: str) -> str:
        base = sanitize(name)
        candidate, n = base, 1
        while candidate in self._taken:
            n += 1
            candidate = f"{base}_{n}"
        self._taken.add(candidate)
        return candidate


def class_name(regmap: RegisterMap) -> str:
    """The model's C# type name: the sanitised peripheral name, kept off the Renode API."""
    name = sanitize(regmap.peripheral)
    return f"{name}_Model" if name in _CLASS_RESERVED else name


def irq_properties(regmap: RegisterMap) -> list[tuple[str, Interrupt]]:
    """GPIO property name per SVD interrupt: ``IRQ`` alone, else ``IRQ`` first then
    ``<Interrupt>_IRQ`` for the others (the first one is the default interrupt)."""
    scope = NameScope({"Size", "Registers", class_name(regmap)})
    out: list[tuple[str, Interrupt]] = []
    for i, irq in enumerate(regmap.interrupts):
        out.append((scope.take("IRQ" if i == 0 else f"{irq.name}_IRQ"), irq))
    return out
