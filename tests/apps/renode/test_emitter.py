from __future__ import annotations

from pathlib import Path

import pytest

from arbor.apps.renode.emitter import emit_model, mode_expression
from arbor.apps.renode.regmap import (
    Access,
    FieldMode,
    Register,
    RegisterField,
    RegisterMap,
    RenodeError,
)
from arbor.apps.renode.svd import SvdDevice, load_device


def test_usart1_skeleton(devices: dict[str, SvdDevice]) -> None:
    model = emit_model(devices["STM32F103xx"].peripheral("USART1"))
    src = model.source
    assert (model.type_name, model.file_name) == ("USART1", "USART1.cs")
    assert model.full_type == "Antmicro.Renode.Peripherals.Generated.USART1"
    assert "public class USART1 : BasicDoubleWordPeripheral, IKnownSize" in src
    assert "public long Size => 0x400;" in src
    assert "[DefaultInterrupt]\n        public GPIO IRQ { get; } = new GPIO();" in src
    assert 'Registers.SR.Define(this, 0xC0, name: "SR")' in src
    assert '.WithFlag(5, FieldMode.Read | FieldMode.Write, name: "RXNE")' in src
    assert '.WithValueField(4, 12, FieldMode.Read | FieldMode.Write, name: "DIV_Mantissa")' in src
    assert ".WithReservedBits(14, 18);" in src  # CR1's gap up to bit 31
    assert "SR = 0x0," in src and "GTPR = 0x18," in src


def test_small_svd_features(small_svd: Path) -> None:
    src = emit_model(load_device(small_svd).peripheral("TIMER0")).source
    # enumerated values become a nested enum and WithEnumField
    assert ".WithEnumField<DoubleWordRegister, CTRL_MODE>(1, 3, FieldMode.Read | FieldMode." in src
    assert "private enum CTRL_MODE : uint" in src and "PERIODIC = 0x2," in src
    assert '.WithFlag(0, FieldMode.Read | FieldMode.WriteOneToClear, name: "IRQ")' in src
    assert '.WithFlag(1, FieldMode.Read | FieldMode.ReadToClear, name: "DONE")' in src
    assert ".WithReservedBits(4, 4)" in src  # between MODE and PRESC
    # a register without fields is one value field; dim names become identifiers
    assert 'Registers.CC1.Define(this, 0xFFFFFFFF, name: "CC[1]")' in src
    assert '.WithValueField(0, 32, FieldMode.Read | FieldMode.Write, name: "CC[1]");' in src
    assert "CH1_INNER_VAL = 0x154," in src
    # the alternate register shares CTRL's offset as an enum alias, with no second Define
    assert "ALT = 0x0," in src and "Registers.ALT.Define" not in src


def _one_register_map(peripheral: str, reg_names: list[str]) -> RegisterMap:
    regs = tuple(
        Register(
            name=n,
            offset=4 * i,
            width=32,
            reset_value=0,
            access=Access.READ_WRITE,
            fields=(
                RegisterField(
                    name='say "hi"',
                    bit_offset=0,
                    bit_width=1,
                    access=Access.READ_ONLY,
                    modes=(FieldMode.READ,),
                ),
            ),
        )
        for i, n in enumerate(reg_names)
    )
    return RegisterMap(
        device="D", peripheral=peripheral, base_address=0, size=0x100, registers=regs
    )


def test_colliding_and_reserved_names_stay_distinct() -> None:
    model = emit_model(_one_register_map("GPIO", ["A[0]", "A0", "Registers", "class"]))
    src = model.source
    assert model.type_name == "GPIO_Model"
    for member in ("A0 = 0x0,", "A0_2 = 0x4,", "Registers_2 = 0x8,", "class_ = 0xC,"):
        assert member in src
    assert 'name: "say \\"hi\\"")' in src  # strings are escaped


def test_mode_expression() -> None:
    assert mode_expression((FieldMode.READ, FieldMode.WRITE_ONE_TO_CLEAR)) == (
        "FieldMode.Read | FieldMode.WriteOneToClear"
    )


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"width": 64}, r"P\.A0 \(64 bits at 0x0\) does not fit a DoubleWord register"),
        ({"offset": 2}, r"P\.A0 \(32 bits at 0x2\) does not fit"),
        ({"width": 8, "reset_value": 0}, None),
    ],
)
def test_only_double_word_maps_are_emitted(update: dict[str, int], reason: str | None) -> None:
    base = _one_register_map("P", ["A0"])
    regmap = base.model_copy(update={"registers": (base.registers[0].model_copy(update=update),)})
    if reason is None:
        assert ".WithReservedBits(1, 7);" in emit_model(regmap).source  # an 8-bit register
        return
    with pytest.raises(RenodeError, match=reason):
        emit_model(regmap)


def test_a_field_overrunning_its_register_is_refused() -> None:
    base = _one_register_map("P", ["A0"])
    wide = base.registers[0].fields[0].model_copy(update={"bit_offset": 31, "bit_width": 2})
    reg = base.registers[0].model_copy(update={"fields": (wide,)})
    with pytest.raises(RenodeError, match="overruns its 32-bit register"):
        emit_model(base.model_copy(update={"registers": (reg,)}))
