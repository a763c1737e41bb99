"""The typed register map: what a peripheral is, independent of SVD or C#.

Every later step (emitter, validators, the agents next) reads this model and nothing else, so a
register map built from a datasheet instead of an SVD goes through the same pipeline.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from arbor.core.errors import ArborError

__all__ = [
    "Access",
    "EnumValue",
    "FieldMode",
    "Interrupt",
    "Register",
    "RegisterField",
    "RegisterMap",
    "RenodeError",
    "field_modes",
]


class RenodeError(ArborError):
    """Bad input to the Renode generator: malformed SVD, unknown peripheral, bad output dir."""

    kind = "renode"


class Access(StrEnum):
    """SVD access types."""

    READ_ONLY = "read-only"
    WRITE_ONLY = "write-only"
    READ_WRITE = "read-write"
    WRITE_ONCE = "writeOnce"
    READ_WRITE_ONCE = "read-writeOnce"

    @property
    def readable(self) -> bool:
        return self in (Access.READ_ONLY, Access.READ_WRITE, Access.READ_WRITE_ONCE)

    @property
    def writable(self) -> bool:
        return self is not Access.READ_ONLY


class FieldMode(StrEnum):
    """Renode's ``FieldMode`` flags (names as in the C# enum)."""

    READ = "Read"
    WRITE = "Write"
    SET = "Set"
    TOGGLE = "Toggle"
    WRITE_ONE_TO_CLEAR = "WriteOneToClear"
    WRITE_ZERO_TO_CLEAR = "WriteZeroToClear"
    READ_TO_CLEAR = "ReadToClear"
    WRITE_ZERO_TO_SET = "WriteZeroToSet"
    WRITE_ZERO_TO_TOGGLE = "WriteZeroToToggle"
    READ_TO_SET = "ReadToSet"
    WRITE_TO_CLEAR = "WriteToClear"
    WRITE_TO_SET = "WriteToSet"


# SVD modifiedWriteValues → the write half of Renode's FieldMode.
_WRITE_MODES: dict[str, FieldMode] = {
    "oneToClear": FieldMode.WRITE_ONE_TO_CLEAR,
    "oneToSet": FieldMode.SET,
    "oneToToggle": FieldMode.TOGGLE,
    "zeroToClear": FieldMode.WRITE_ZERO_TO_CLEAR,
    "zeroToSet": FieldMode.WRITE_ZERO_TO_SET,
    "zeroToToggle": FieldMode.WRITE_ZERO_TO_TOGGLE,
    "clear": FieldMode.WRITE_TO_CLEAR,
    "set": FieldMode.WRITE_TO_SET,
    "modify": FieldMode.WRITE,
}
# SVD readAction → the read side effect.
_READ_MODES: dict[str, FieldMode] = {
    "clear": FieldMode.READ_TO_CLEAR,
    "set": FieldMode.READ_TO_SET,
}


def field_modes(
    access: Access, modified_write_values: str | None, read_action: str | None
) -> tuple[FieldMode, ...]:
    """The Renode ``FieldMode`` flags for an SVD access/modifiedWriteValues/readAction triple,
    in a canonical order (declaration order of :class:`FieldMode`)."""
    modes: set[FieldMode] = set()
    if access.readable:
        modes.add(_READ_MODES.get(read_action or "", FieldMode.READ))
        if read_action in _READ_MODES:
            modes.add(FieldMode.READ)
    if access.writable:
        modes.add(_WRITE_MODES.get(modified_write_values or "modify", FieldMode.WRITE))
    order = list(FieldMode)
    return tuple(sorted(modes, key=order.index))


class EnumValue(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    value: int
    description: str = ""


class RegisterField(BaseModel):
    """One bit field; ``modes`` are the Renode FieldMode flags derived from the SVD."""

    model_config = ConfigDict(frozen=True)

    name: str
    bit_offset: int = Field(ge=0, le=63)
    bit_width: int = Field(ge=1, le=64)
    access: Access
    modes: tuple[FieldMode, ...]
    modified_write_values: str | None = None
    read_action: str | None = None
    enum_values: tuple[EnumValue, ...] = ()
    description: str = ""

    @property
    def mask(self) -> int:
        return ((1 << self.bit_width) - 1) << self.bit_offset


class Register(BaseModel):
    """One register; ``alternates`` name other SVD registers sharing this offset (Renode
    defines one register per offset, so they become aliases in the ``Registers`` enum)."""

    model_config = ConfigDict(frozen=True)

    name: str
    offset: int = Field(ge=0)
    width: int = Field(ge=8, le=64)
    reset_value: int = Field(ge=0)
    access: Access
    fields: tuple[RegisterField, ...] = ()
    alternates: tuple[str, ...] = ()
    description: str = ""

    @property
    def size_bytes(self) -> int:
        return max(1, self.width // 8)


class Interrupt(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    value: int
    description: str = ""


class RegisterMap(BaseModel):
    """A peripheral as the generator sees it."""

    model_config = ConfigDict(frozen=True)

    device: str
    peripheral: str
    description: str = ""
    group: str = ""
    base_address: int = Field(ge=0)
    size: int = Field(gt=0)
    interrupts: tuple[Interrupt, ...] = ()
    registers: tuple[Register, ...] = ()
