"""CMSIS-SVD → :class:`RegisterMap`, through ``cmsis-svd`` (0.6 API: ``SVDParser.for_xml_file``).

``cmsis-svd`` resolves ``derivedFrom`` and expands ``dim`` arrays; clusters are walked here
because its own ``get_registers`` drops registers of nested clusters and never adds an outer
cluster's offset to them. Registers sharing an offset (SVD ``alternateRegister``) become one
register with aliases, since a Renode register collection holds one register per offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import ParseError

from cmsis_svd.model import (
    SVDDevice,
    SVDField,
    SVDFieldArray,
    SVDPeripheral,
    SVDPeripheralArray,
    SVDRegister,
    SVDRegisterArray,
    SVDRegisterCluster,
    SVDRegisterClusterArray,
)
from cmsis_svd.parser import SVDParser
from lxml.etree import LxmlError
from pydantic import ValidationError

from arbor.apps.renode.regmap import (
    Access,
    EnumValue,
    Interrupt,
    Register,
    RegisterField,
    RegisterMap,
    RenodeError,
    field_modes,
)

__all__ = ["SvdDevice", "load_device"]

_Node = SVDRegister | SVDRegisterArray | SVDRegisterCluster | SVDRegisterClusterArray


@dataclass(frozen=True)
class SvdDevice:
    """A parsed SVD: peripheral names in file order, register maps built on demand."""

    name: str
    path: Path
    _device: SVDDevice

    def _peripherals(self) -> list[SVDPeripheral]:
        out: list[SVDPeripheral] = []
        for p in self._device.peripherals:
            out.extend(p.peripherals if isinstance(p, SVDPeripheralArray) else [p])
        return out

    @property
    def peripheral_names(self) -> list[str]:
        return [str(p.name) for p in self._peripherals()]

    def peripheral(self, name: str) -> RegisterMap:
        """The register map of one peripheral (case-insensitive name), or a RenodeError."""
        for p in self._peripherals():
            if str(p.name).lower() == name.lower():
                return self._map(p)
        raise RenodeError(f"unknown peripheral {name!r} in {self.path.name}")

    def register_maps(self) -> list[RegisterMap]:
        return [self._map(p) for p in self._peripherals()]

    def _map(self, p: SVDPeripheral) -> RegisterMap:
        try:
            return _register_map(self.name, p)
        except ValidationError as exc:  # e.g. a 100-bit field, a negative offset
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise RenodeError(
                f"bad value in peripheral {p.name} of {self.path.name}: {where}: {error['msg']}"
            ) from exc


def load_device(path: Path) -> SvdDevice:
    """Parse an SVD file; a missing, unreadable or malformed file is a RenodeError."""
    if not path.is_file():
        raise RenodeError(f"SVD file not found: {path}")
    try:
        device = SVDParser.for_xml_file(str(path)).get_device()
    except (ParseError, LxmlError) as exc:
        raise RenodeError(f"malformed SVD {path.name}: {exc}") from exc
    except OSError as exc:
        raise RenodeError(f"cannot read SVD {path}: {exc.strerror or exc}") from exc
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise RenodeError(f"malformed SVD {path.name}: {type(exc).__name__}: {exc}") from exc
    if not device.peripherals:
        raise RenodeError(f"malformed SVD {path.name}: no peripherals")
    return SvdDevice(name=str(device.name or path.stem), path=path, _device=device)


def _register_map(device: str, p: SVDPeripheral) -> RegisterMap:
    name = str(p.name)
    if p.base_address is None:
        raise RenodeError(f"peripheral {name} has no baseAddress")
    raw: list[tuple[str, int, SVDRegister]] = []
    for node in p.registers or []:
        raw.extend(_walk(node, "", 0))
    registers = _merge_alternates([_register(n, off, r) for n, off, r in raw])
    span = max((r.offset + r.size_bytes for r in registers), default=0)
    blocks = [b.offset + b.size for b in p.address_blocks or [] if b.offset is not None and b.size]
    size = _round_up(max([span, *blocks, 4]))
    interrupts = sorted(
        {(str(i.name), int(i.value)) for i in p.interrupts or [] if i.value is not None},
        key=lambda nv: nv[1],
    )
    return RegisterMap(
        device=device,
        peripheral=name,
        description=_text(p.description),
        group=_text(p.group_name),
        base_address=int(p.base_address),
        size=size,
        interrupts=tuple(Interrupt(name=n, value=v) for n, v in interrupts),
        registers=tuple(registers),
    )


def _walk(node: _Node, prefix: str, extra: int) -> list[tuple[str, int, SVDRegister]]:
    """(name, absolute offset, register) for every register under ``node``.

    ``cmsis-svd`` already prefixed and relocated a non-array cluster's direct registers by that
    cluster's own offset; ``extra`` carries the offsets of clusters further out.
    """
    if isinstance(node, SVDRegister):
        return [(prefix + str(node.name), extra + int(node.address_offset or 0), node)]
    if isinstance(node, SVDRegisterArray):
        return [r for reg in node.registers for r in _walk(reg, prefix, extra)]
    if isinstance(node, SVDRegisterClusterArray):
        return [r for c in node.clusters for r in _walk(c, prefix, extra)]
    out: list[tuple[str, int, SVDRegister]] = []
    for reg in node.registers:
        out.extend(_walk(reg, prefix, extra))
    inner_prefix = f"{prefix}{node.name}_"
    inner_extra = extra + int(node.address_offset or 0)
    for cluster in node.clusters:
        out.extend(_walk(cluster, inner_prefix, inner_extra))
    return out


def _register(name: str, offset: int, r: SVDRegister) -> Register:
    width = int(r.size or 32)
    access = _access(r.access, Access.READ_WRITE)
    fields: list[RegisterField] = []
    for f in r.fields:
        for leaf in f.fields if isinstance(f, SVDFieldArray) else [f]:
            fields.append(_field(leaf, access, name))
    reset = int(r.reset_value or 0) & ((1 << width) - 1)
    return Register(
        name=name,
        offset=offset,
        width=width,
        reset_value=reset,
        access=access,
        fields=tuple(sorted(fields, key=lambda f: f.bit_offset)),
        description=_text(r.description),
    )


def _field(f: SVDField, register_access: Access, register: str) -> RegisterField:
    if f.bit_offset is None or f.bit_width is None:
        raise RenodeError(f"field {f.name} of {register} has no bit position")
    access = _access(f.access, register_access)
    mwv = f.modified_write_values.value if f.modified_write_values else None
    read_action = f.read_action.value if f.read_action else None
    values: list[EnumValue] = []
    for group in f.enumerated_values or []:
        for ev in group.enumerated_values:
            if ev.name is not None and ev.value is not None:
                values.append(EnumValue(name=ev.name, value=int(ev.value)))
    return RegisterField(
        name=str(f.name),
        bit_offset=int(f.bit_offset),
        bit_width=int(f.bit_width),
        access=access,
        modes=field_modes(access, mwv, read_action),
        modified_write_values=mwv,
        read_action=read_action,
        enum_values=tuple(values),
        description=_text(f.description),
    )


def _merge_alternates(registers: list[Register]) -> list[Register]:
    """One register per offset, in offset order; later ones at the same offset are aliases."""
    by_offset: dict[int, Register] = {}
    for reg in registers:
        first = by_offset.get(reg.offset)
        if first is None:
            by_offset[reg.offset] = reg
        else:
            alternates = (*first.alternates, reg.name)
            by_offset[reg.offset] = first.model_copy(update={"alternates": alternates})
    return [by_offset[o] for o in sorted(by_offset)]


def _access(value: object, default: Access) -> Access:
    text = getattr(value, "value", None)
    return Access(text) if isinstance(text, str) else default


def _text(value: str | None) -> str:
    return " ".join((value or "").split())


def _round_up(n: int) -> int:
    """Sizes are powers of two from 0x100 up, like Renode's own models."""
    size = 0x100
    while size < n:
        size *= 2
    return size
