"""The Renode workflow's agents: what each is told, and what the planner returns."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from arbor.apps.renode.regmap import RegisterMap

__all__ = [
    "CODER",
    "DESCRIBER",
    "PLANNER",
    "InterruptPlan",
    "Plan",
    "SideEffect",
    "coder_prompt",
    "extract_code",
    "planner_prompt",
    "regmap_summary",
]

PLANNER = (
    "You plan the behaviour of a Renode peripheral model (C#). From the register map, say "
    "which registers have side effects (reads that clear, writes that start something, "
    "FIFOs) and what drives each interrupt line. Reply with the JSON object only."
)

CODER = (
    "You edit a Renode peripheral model written in C# against Renode's register API "
    "(DoubleWordRegister, WithFlag/WithValueField with valueProviderCallback/writeCallback, "
    "GPIO.Set, IRQ). Add behaviour: callbacks, FIFOs, an UpdateInterrupts() method. Keep "
    "every register, field, offset, width, reset value and access mode exactly as they are. "
    "Reply with the complete C# file only, in one ```csharp block."
)

DESCRIBER = (
    "You turn a description of a peripheral (a datasheet excerpt) into its register map. "
    "Offsets are byte offsets, 4-byte aligned, 32-bit registers. Reply with the JSON object only."
)


class SideEffect(BaseModel):
    target: str = Field(description="Register name.")
    effect: str = Field(description="What reading or writing it does besides storing bits.")


class InterruptPlan(BaseModel):
    name: str = Field(description="Interrupt line.")
    driven_by: str = Field(description="Which status/enable bits raise it.")


class Plan(BaseModel):
    side_effects: list[SideEffect] = Field(default_factory=list)
    interrupts: list[InterruptPlan] = Field(default_factory=list)
    notes: str = ""

    def text(self) -> str:
        lines = [f"- {s.target}: {s.effect}" for s in self.side_effects]
        lines += [f"- interrupt {i.name}: {i.driven_by}" for i in self.interrupts]
        if self.notes:
            lines.append(f"- {self.notes}")
        return "\n".join(lines) or "- (no plan)"


def regmap_summary(regmap: RegisterMap, limit: int = 40) -> str:
    """A compact listing of the map for prompts."""
    lines = [f"{regmap.device} {regmap.peripheral}, size 0x{regmap.size:X}"]
    for r in regmap.registers[:limit]:
        fields = ", ".join(
            f"{f.name}[{f.bit_offset + f.bit_width - 1}:{f.bit_offset}] {f.access.value}"
            + (f" {f.read_action or ''}{f.modified_write_values or ''}".rstrip())
            for f in r.fields
        )
        lines.append(f"0x{r.offset:03X} {r.name} reset=0x{r.reset_value:X}: {fields or '-'}")
    if len(regmap.registers) > limit:
        lines.append(f"... {len(regmap.registers) - limit} more registers")
    lines += [f"interrupt {i.name} = {i.value}" for i in regmap.interrupts]
    return "\n".join(lines)


def planner_prompt(regmap: RegisterMap, context: str) -> str:
    extra = f"\n\nReference material:\n{context}" if context else ""
    return f"Register map:\n{regmap_summary(regmap)}{extra}"


def coder_prompt(
    regmap: RegisterMap, best: str, plan: str, feedback: str, review: str, context: str
) -> str:
    parts = [
        f"Register map:\n{regmap_summary(regmap)}",
        f"Behaviour to add:\n{plan}",
        f"Current model (keep its register definitions exactly):\n```csharp\n{best}\n```",
    ]
    if feedback:
        parts.append(f"Your previous edit was rejected: {feedback}. Fix that.")
    if review:
        parts.append(f"Reviewer notes:\n{review}")
    if context:
        parts.append(f"Reference material:\n{context}")
    parts.append("Reply with the complete new C# file.")
    return "\n\n".join(parts)


_FENCE = re.compile(r"```[ \t]*(?:c#|csharp|cs)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


def extract_code(reply: str) -> str:
    """The C# in a reply: its longest fenced block, else the reply itself."""
    blocks = _FENCE.findall(reply)
    code = max(blocks, key=len) if blocks else reply
    return code.strip() + "\n"
