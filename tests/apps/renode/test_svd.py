from __future__ import annotations

from pathlib import Path

import pytest
from cmsis_svd.parser import SVDParser

from arbor.apps.renode.regmap import Access, FieldMode, RegisterMap, RenodeError
from arbor.apps.renode.svd import SvdDevice, load_device


def _by_name(regmap: RegisterMap) -> dict[str, tuple[int, int]]:
    return {r.name: (r.offset, r.reset_value) for r in regmap.registers}


def test_small_svd_resolves_dims_clusters_and_alternates(small_svd: Path) -> None:
    device = load_device(small_svd)
    assert device.name == "TESTDEV"
    assert device.peripheral_names == ["TIMER0", "TIMER1"]
    timer = device.peripheral("timer0")  # case-insensitive
    assert timer.base_address == 0x40000000
    assert timer.size == 0x800  # the address block, not only the last register
    assert [(i.name, i.value) for i in timer.interrupts] == [("TIMER0", 8)]
    assert _by_name(timer) == {
        "CTRL": (0x0, 0x5),
        "STATUS": (0x4, 0x0),
        "CC[0]": (0x10, 0xFFFFFFFF),
        "CC[1]": (0x14, 0xFFFFFFFF),
        "CC[2]": (0x18, 0xFFFFFFFF),
        "FLAGS": (0x20, 0x0),
        "CH[0]_CFG": (0x100, 0x1),
        "CH[0]_INNER_VAL": (0x114, 0x0),  # nested cluster: both cluster offsets added
        "CH[1]_CFG": (0x140, 0x1),
        "CH[1]_INNER_VAL": (0x154, 0x0),
    }
    ctrl = timer.registers[0]
    assert ctrl.alternates == ("ALT",)
    fields = {f.name: f for f in ctrl.fields}
    assert (fields["MODE"].bit_offset, fields["MODE"].bit_width) == (1, 3)  # bitRange
    assert (fields["PRESC"].bit_offset, fields["PRESC"].bit_width) == (8, 8)  # lsb/msb
    assert fields["PRESC"].access is Access.READ_ONLY
    assert [(v.name, v.value) for v in fields["MODE"].enum_values] == [
        ("ONESHOT", 0),
        ("PERIODIC", 2),
    ]
    status = {f.name: f for f in timer.registers[1].fields}
    assert status["IRQ"].modes == (FieldMode.READ, FieldMode.WRITE_ONE_TO_CLEAR)
    assert status["DONE"].access is Access.READ_ONLY  # inherited from the register
    assert status["DONE"].modes == (FieldMode.READ, FieldMode.READ_TO_CLEAR)
    flags = next(r for r in timer.registers if r.name == "FLAGS")
    assert [(f.name, f.bit_offset) for f in flags.fields] == [
        ("F0", 0),
        ("F1", 2),
        ("F2", 4),
        ("F3", 6),
    ]


def test_derived_peripheral_copies_registers_at_its_own_base(small_svd: Path) -> None:
    device = load_device(small_svd)
    base, derived = device.peripheral("TIMER0"), device.peripheral("TIMER1")
    assert derived.base_address == 0x40001000
    assert derived.registers == base.registers


def test_real_svds(devices: dict[str, SvdDevice]) -> None:
    usart = devices["STM32F103xx"].peripheral("USART1")
    assert (usart.base_address, usart.size) == (0x40013800, 0x400)
    assert _by_name(usart)["SR"] == (0x0, 0xC0)
    assert [(i.name, i.value) for i in usart.interrupts] == [("USART1", 37)]
    gpioa = devices["STM32F103xx"].peripheral("GPIOA")
    gpiob = devices["STM32F103xx"].peripheral("GPIOB")  # derivedFrom GPIOA
    assert gpiob.base_address == 0x40010C00 and gpiob.registers == gpioa.registers
    tim1 = devices["STM32F103xx"].peripheral("TIM1")
    assert dict(_by_name(tim1))["CCMR1_Output"][0] == 0x18
    assert next(r for r in tim1.registers if r.offset == 0x18).alternates == ("CCMR1_Input",)
    uarte = devices["nrf52840"].peripheral("UARTE0")
    assert _by_name(uarte)["PSEL_TXD"] == (0x50C, 0xFFFFFFFF)  # a cluster's register
    ppi = devices["nrf52840"].peripheral("PPI")
    assert _by_name(ppi)["TASKS_CHG[1]_DIS"][0] == 0xC  # a cluster array
    dma = devices["rp2040"].peripheral("DMA")
    assert [i.value for i in dma.interrupts] == [11, 12]
    offsets = [r.offset for r in dma.registers]
    assert offsets == sorted(set(offsets))


def test_every_peripheral_has_a_map(devices: dict[str, SvdDevice]) -> None:
    counts = {name: len(d.register_maps()) for name, d in devices.items()}
    assert counts == {"STM32F103xx": 53, "nrf52840": 73, "rp2040": 35}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RenodeError, match="SVD file not found"):
        load_device(tmp_path / "nope.svd")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<device><name>x", "malformed SVD bad.svd"),
        ("<foo/>", "no peripherals"),
        ("not xml at all", "malformed SVD"),
    ],
)
def test_malformed_svd(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.svd"
    path.write_text(text)
    with pytest.raises(RenodeError, match=reason):
        load_device(path)


def test_bad_peripheral_contents(tmp_path: Path) -> None:
    path = tmp_path / "p.svd"
    path.write_text(
        "<device><name>D</name><peripherals><peripheral><name>P</name>"
        "<baseAddress>0x1000</baseAddress><registers><register><name>R</name>"
        "<addressOffset>0</addressOffset><fields><field><name>F</name></field></fields>"
        "</register></registers></peripheral></peripherals></device>"
    )
    device = load_device(path)
    with pytest.raises(RenodeError, match="field F of R has no bit position"):
        device.peripheral("P")


def test_unknown_peripheral_names_it(small_svd: Path) -> None:
    with pytest.raises(RenodeError, match=r"unknown peripheral 'UART9' in small\.svd"):
        load_device(small_svd).peripheral("UART9")


def test_out_of_range_values_are_named(tmp_path: Path) -> None:
    path = tmp_path / "wide.svd"
    path.write_text(
        "<device><name>D</name><peripherals><peripheral><name>P</name>"
        "<baseAddress>0x1000</baseAddress><registers><register><name>R</name>"
        "<addressOffset>0</addressOffset><fields><field><name>F</name><bitOffset>0</bitOffset>"
        "<bitWidth>100</bitWidth></field></fields></register></registers></peripheral>"
        "</peripherals></device>"
    )
    with pytest.raises(RenodeError, match=r"bad value in peripheral P of wide\.svd: bit_width"):
        load_device(path).peripheral("P")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.svd"
    path.write_text("<device/>")

    def denied(cls: object, p: str) -> None:
        raise PermissionError(13, "Permission denied", p)

    # As root chmod 000 still reads, so the OS error is raised where the file is opened.
    monkeypatch.setattr(SVDParser, "for_xml_file", classmethod(denied))
    with pytest.raises(RenodeError, match=r"cannot read SVD .*locked\.svd: Permission denied"):
        load_device(path)
