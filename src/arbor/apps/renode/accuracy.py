"""Register accuracy and conventions, judged on the C# text against the register map.

Accuracy counts one item per register (offset in the ``Registers`` enum and reset value in its
``Define``), one per alias register (an enum member at the same offset) and one per field
(position, width and FieldMode of the ``With*`` call bearing its name); score = matched / total.
"""

from __future__ import annotations

from dataclasses import dataclass

from arbor.apps.renode.csharp import DefineChain, FieldCall, ModelFacts
from arbor.apps.renode.names import irq_properties, sanitize
from arbor.apps.renode.regmap import Register, RegisterField, RegisterMap

__all__ = ["Accuracy", "Conventions", "check_accuracy", "check_conventions", "field_span"]

_MAX_DETAILS = 20


@dataclass(frozen=True)
class Accuracy:
    matched: int
    total: int
    mismatches: tuple[str, ...]

    @property
    def score(self) -> float:
        return 1.0 if self.total == 0 else self.matched / self.total


@dataclass(frozen=True)
class Conventions:
    passed: tuple[str, ...]
    failed: tuple[str, ...]

    @property
    def score(self) -> float:
        total = len(self.passed) + len(self.failed)
        return 1.0 if total == 0 else len(self.passed) / total


def field_span(call: FieldCall) -> tuple[int, int] | None:
    """(position, width) a ``With*`` call occupies, or None for calls that hold no bits."""
    if call.method in ("WithFlag", "WithTaggedFlag") and call.ints:
        return call.ints[0], 1
    if (
        call.method
        in ("WithValueField", "WithEnumField", "WithReservedBits", "WithIgnoredBits", "WithTag")
        and len(call.ints) >= 2
    ):
        return call.ints[0], call.ints[1]
    return None


def _field_ok(f: RegisterField, calls: list[FieldCall]) -> str | None:
    """None when a call named like ``f`` matches it, else why not."""
    named = [c for c in calls if c.name == f.name and field_span(c) is not None]
    if not named:
        return "missing"
    want_modes = {m.value for m in f.modes}
    for c in named:
        if field_span(c) == (f.bit_offset, f.bit_width) and set(c.modes) == want_modes:
            return None
    c = named[0]
    return (
        f"bits {field_span(c)} modes {sorted(c.modes)}, expected "
        f"{(f.bit_offset, f.bit_width)} {sorted(want_modes)}"
    )


def _register_ok(reg: Register, chain: DefineChain | None, facts: ModelFacts) -> str | None:
    if chain is None:
        return "no Define chain"
    offset = facts.enum_members.get(chain.member)
    if offset != reg.offset:
        return f"offset {offset if offset is None else hex(offset)}, expected {reg.offset:#x}"
    if chain.reset_value != reg.reset_value:
        got = chain.reset_value
        return f"reset {got if got is None else hex(got)}, expected {reg.reset_value:#x}"
    return None


def check_accuracy(regmap: RegisterMap, facts: ModelFacts) -> Accuracy:
    by_name: dict[str, DefineChain] = {}
    for chain in facts.chains:
        if chain.name is not None:
            by_name.setdefault(chain.name, chain)
    matched = total = 0
    problems: list[str] = []
    for reg in regmap.registers:
        found_chain = by_name.get(reg.name)
        checks: list[tuple[str, str | None]] = [(reg.name, _register_ok(reg, found_chain, facts))]
        for alt in reg.alternates:
            base = sanitize(alt)
            found = any(
                (m == base or m.startswith(base + "_")) and v == reg.offset
                for m, v in facts.enum_members.items()
            )
            checks.append((f"{alt} (alias)", None if found else "no enum member at its offset"))
        calls = found_chain.calls if found_chain is not None else []
        for f in reg.fields:
            checks.append((f"{reg.name}.{f.name}", _field_ok(f, calls)))
        for what, problem in checks:
            total += 1
            if problem is None:
                matched += 1
            elif len(problems) < _MAX_DETAILS:
                problems.append(f"{what}: {problem}")
    return Accuracy(matched=matched, total=total, mismatches=tuple(problems))


def check_conventions(regmap: RegisterMap, facts: ModelFacts) -> Conventions:
    passed: list[str] = []
    failed: list[str] = []

    def check(name: str, ok: bool, why: str = "") -> None:
        (passed if ok else failed).append(name if ok else f"{name}: {why}")

    span = max((r.offset + r.size_bytes for r in regmap.registers), default=0)
    check(
        "size covers the map",
        facts.size is not None and facts.size >= span,
        f"Size {facts.size if facts.size is None else hex(facts.size)} < {span:#x}",
    )
    for name, irq in irq_properties(regmap):
        check(f"GPIO {name} for {irq.name}", name in facts.gpio_properties, "property missing")
    offsets: dict[int, str] = {}
    clash = ""
    for chain in facts.chains:
        offset = facts.enum_members.get(chain.member)
        if offset is not None and offset in offsets and not clash:
            clash = f"{offsets[offset]} and {chain.member} at {offset:#x}"
        elif offset is not None:
            offsets[offset] = chain.member
    check("one Define per offset", not clash, clash)
    overlap = ""
    for chain in facts.chains:
        used = 0
        for call in chain.calls:
            span_ = field_span(call)
            if span_ is None:
                continue
            mask = ((1 << span_[1]) - 1) << span_[0]
            if mask & used or span_[0] + span_[1] > 32:
                overlap = overlap or f"{chain.member}: {call.method}{call.ints}"
            used |= mask
    check("fields disjoint within 32 bits", not overlap, overlap)
    return Conventions(passed=tuple(passed), failed=tuple(failed))
