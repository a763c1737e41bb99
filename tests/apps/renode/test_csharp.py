from __future__ import annotations

from arbor.apps.renode.csharp import parse_csharp, read_model

HAND_WRITTEN = """
namespace Antmicro.Renode.Peripherals.Mine
{
    public class Foo : BasicDoubleWordPeripheral, IKnownSize
    {
        public Foo(IMachine machine) : base(machine)
        {
            Registers.Control.Define(this, resetValue: 0x10u, name: "CTRL")
                .WithFlag(0, out enabled, (FieldMode.Read | FieldMode.Write), name: "EN")
                .WithValueField(1, 7, mode: FieldMode.Read, name: "DIV")
                .WithTag("RES", 8, 24);
            Registers.Status.Define(this)
                .WithEnumField<DoubleWordRegister, Mode>(0, 2, FieldMode.WriteOneToClear);
        }

        public long Size { get { return 0x100; } }
        public long Size2 => 0x200;
        public Antmicro.Renode.Core.GPIO RxIRQ { get; private set; }

        private IFlagRegisterField enabled;

        private enum Registers
        {
            Control = 0,
            Status = 0x04,
        }
    }
}
"""


def test_reads_the_facts_whatever_the_style() -> None:
    facts = read_model(HAND_WRITTEN)
    assert facts.classes == ["Foo"]
    assert facts.enum_members == {"Control": 0, "Status": 4}
    assert facts.gpio_properties == ["RxIRQ"]
    assert facts.size is None  # a block-bodied getter is not a constant this reader trusts
    ctrl, status = facts.chains
    assert (ctrl.member, ctrl.reset_value, ctrl.name) == ("Control", 0x10, "CTRL")
    assert [(c.method, c.ints, set(c.modes), c.name) for c in ctrl.calls] == [
        ("WithFlag", (0,), {"Read", "Write"}, "EN"),
        ("WithValueField", (1, 7), {"Read"}, "DIV"),
        ("WithTag", (8, 24), set(), None),
    ]
    assert (status.member, status.reset_value, status.name) == ("Status", None, None)
    assert status.calls[0].method == "WithEnumField"
    assert status.calls[0].modes == {"WriteOneToClear"}


def test_size_expression_property() -> None:
    facts = read_model("class A { public long Size => 0x400; }")
    assert facts.size == 0x400


def test_syntax_errors_are_located() -> None:
    _, ok = parse_csharp(HAND_WRITTEN)
    assert ok.ok and ok.errors == ()
    broken = HAND_WRITTEN.replace('name: "DIV")', 'name: "DIV"', 1)
    _, syntax = parse_csharp(broken)
    assert not syntax.ok
    assert any(line in (10, 11) for line, _, _ in syntax.errors)
    _, garbage = parse_csharp("class { ??? }")
    assert len(garbage.errors) >= 1
