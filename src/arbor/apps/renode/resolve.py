"""What the Renode workflow starts from: a register map.

Three ways in: an SVD file and a peripheral name; a request in words naming one of the
shipped devices and one of its peripherals ("generate a Renode model for USART1 of
STM32F103xx", resolved deterministically against the SVDs under ``data/``); or a free-text
description of a peripheral, for which the model proposes a register map
(:class:`ProposedMap`) that is checked like any other (offsets in range, no overlaps).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, Field

from arbor.apps.renode.regmap import (
    Access,
    Interrupt,
    Register,
    RegisterField,
    RegisterMap,
    RenodeError,
    field_modes,
)
from arbor.apps.renode.svd import load_device

__all__ = [
    "ProposedField",
    "ProposedMap",
    "ProposedRegister",
    "find_request",
    "proposed_to_regmap",
    "shipped_svds",
]


def shipped_svds() -> dict[str, Path]:
    """The SVDs shipped with the package, by device name (file stem)."""
    root = Path(str(files("arbor.apps.renode").joinpath("data")))
    return {p.stem: p for p in sorted(root.glob("*.svd"))}


@lru_cache(maxsize=8)
def _peripheral_names(svd: Path) -> tuple[str, ...]:
    return tuple(load_device(svd).peripheral_names)


def _aliases(stem: str) -> list[str]:
    names = {stem.lower()}
    trimmed = stem.lower().rstrip("x")
    if len(trimmed) >= 5:
        names.add(trimmed)
    return sorted(names, key=len, reverse=True)


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![a-z0-9_]){re.escape(name)}(?![a-z0-9_])", text) is not None


def find_request(text: str, svds: dict[str, Path] | None = None) -> tuple[Path, str]:
    """The SVD and peripheral a request in words names, e.g. "USART1 of STM32F103xx"."""
    svds = shipped_svds() if svds is None else svds
    lowered = text.lower()
    device = next((stem for stem in svds if any(a in lowered for a in _aliases(stem))), None)
    if device is None:
        known = ", ".join(svds) or "none"
        raise RenodeError(
            f"no known device named in the request (known devices: {known}); give an SVD "
            "file and a peripheral, or a description of the peripheral's registers"
        )
    names = _peripheral_names(svds[device])
    found = sorted((n for n in names if _mentions(lowered, n.lower())), key=len, reverse=True)
    if not found:
        raise RenodeError(
            f"no peripheral of {device} named in the request (e.g. {', '.join(names[:8])})"
        )
    return svds[device], found[0]


# ---- a register map proposed by the model from a description --------------------------------
class ProposedField(BaseModel):
    name: str = Field(min_length=1, description="Field name, e.g. 'EN'.")
    bit_offset: int = Field(ge=0, le=63, description="Lowest bit of the field.")
    bit_width: int = Field(ge=1, le=64, description="Number of bits.")
    access: Access = Access.READ_WRITE


class ProposedRegister(BaseModel):
    name: str = Field(min_length=1, description="Register name, e.g. 'CTRL'.")
    offset: int = Field(ge=0, description="Byte offset from the peripheral's base.")
    width: int = Field(32, description="Width in bits (32).")
    reset_value: int = Field(0, ge=0)
    access: Access = Access.READ_WRITE
    fields: list[ProposedField] = Field(default_factory=list)
    description: str = ""


class ProposedMap(BaseModel):
    """A peripheral's registers as described in words (a datasheet chunk)."""

    peripheral: str = Field(min_length=1, description="Peripheral name, e.g. 'UART0'.")
    base_address: int = Field(0, ge=0)
    size: int = Field(0x400, gt=0, description="Size of the register block in bytes.")
    registers: list[ProposedRegister] = Field(min_length=1)
    interrupts: list[str] = Field(default_factory=list, description="Interrupt line names.")


def _ident(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name.strip()).upper()
    return cleaned if cleaned and not cleaned[0].isdigit() else f"R_{cleaned}"


def proposed_to_regmap(proposal: ProposedMap, device: str = "DESCRIBED") -> RegisterMap:
    """Check a proposed map (offsets inside the block, no overlapping registers or fields)
    and turn it into a :class:`RegisterMap`; the first problem is a :class:`RenodeError`."""
    registers: list[Register] = []
    taken: list[tuple[int, int, str]] = []
    for r in sorted(proposal.registers, key=lambda r: r.offset):
        name = _ident(r.name)
        if r.width != 32:
            raise RenodeError(f"register {name}: width {r.width} (only 32-bit registers)")
        if r.offset % 4:
            raise RenodeError(f"register {name}: offset 0x{r.offset:X} is not 4-byte aligned")
        if r.offset + 4 > proposal.size:
            raise RenodeError(
                f"register {name}: offset 0x{r.offset:X} outside the 0x{proposal.size:X}-byte block"
            )
        for start, end, other in taken:
            if r.offset < end and start < r.offset + 4:
                raise RenodeError(f"register {name} overlaps {other} at 0x{r.offset:X}")
        taken.append((r.offset, r.offset + 4, name))
        if r.reset_value >> 32:
            raise RenodeError(f"register {name}: reset value 0x{r.reset_value:X} exceeds 32 bits")
        fields: list[RegisterField] = []
        used = 0
        for f in sorted(r.fields, key=lambda f: f.bit_offset):
            mask = ((1 << f.bit_width) - 1) << f.bit_offset
            if f.bit_offset + f.bit_width > 32:
                raise RenodeError(f"{name}.{f.name}: bits beyond the register's 32")
            if used & mask:
                raise RenodeError(f"{name}.{f.name}: overlaps another field")
            used |= mask
            fields.append(
                RegisterField(
                    name=_ident(f.name),
                    bit_offset=f.bit_offset,
                    bit_width=f.bit_width,
                    access=f.access,
                    modes=field_modes(f.access, None, None),
                )
            )
        registers.append(
            Register(
                name=name,
                offset=r.offset,
                width=32,
                reset_value=r.reset_value,
                access=r.access,
                fields=tuple(fields),
                description=r.description,
            )
        )
    return RegisterMap(
        device=device,
        peripheral=_ident(proposal.peripheral),
        base_address=proposal.base_address,
        size=proposal.size,
        interrupts=tuple(
            Interrupt(name=_ident(n), value=i) for i, n in enumerate(proposal.interrupts)
        ),
        registers=tuple(registers),
    )
