from __future__ import annotations

import pytest

from arbor.apps.renode.compile import McsNotFoundError, compile_models, stubs_source
from arbor.apps.renode.emitter import emit_model
from arbor.apps.renode.regmap import RenodeError
from arbor.apps.renode.svd import SvdDevice

pytestmark = pytest.mark.usefixtures("mcs")

BROKEN = """
using Antmicro.Renode.Core;
using Antmicro.Renode.Core.Structure.Registers;
namespace Antmicro.Renode.Peripherals.Generated
{
    public class Broken : BasicDoubleWordPeripheral, IKnownSize
    {
        public Broken(IMachine machine) : base(machine)
        {
            Registers.A.Define(this, 0x0, name: "A").WithFlag(0, FieldMode.Sideways, name: "X");
        }
        private enum Registers : long { A = 0 }
    }
}
"""


def test_stubs_compile_alone() -> None:
    assert compile_models({}) == {}
    assert "namespace Antmicro.Renode.Core.Structure.Registers" in stubs_source()


def test_models_compile_together_and_errors_stay_with_their_file(
    devices: dict[str, SvdDevice],
) -> None:
    good = emit_model(devices["STM32F103xx"].peripheral("USART1"))
    results = compile_models({good.file_name: good.source, "Broken.cs": BROKEN})
    assert results[good.file_name].ok
    broken = results["Broken.cs"]
    assert not broken.ok
    joined = "\n".join(broken.errors)
    assert "FieldMode" in joined and "Sideways" in joined  # CS0117: no such member
    assert "IKnownSize" in joined or "Size" in joined  # CS0535: Size not implemented


def test_a_model_using_an_api_outside_the_surface_fails() -> None:
    source = BROKEN.replace("FieldMode.Sideways", "FieldMode.Read").replace(
        "private enum", "public long Size => 4; void F() { machine.Pause(); }\n        private enum"
    )
    errors = compile_models({"M.cs": source})["M.cs"].errors
    assert len(errors) == 1 and "Pause" in errors[0]


def test_bad_file_names_are_refused() -> None:
    with pytest.raises(RenodeError, match="bad model file name"):
        compile_models({"../x.cs": ""})
    with pytest.raises(RenodeError, match="bad model file name"):
        compile_models({"RenodeApi.cs": ""})


def test_missing_mcs_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(McsNotFoundError, match="install Debian's mono-mcs"):
        compile_models({"A.cs": "class A {}"})
