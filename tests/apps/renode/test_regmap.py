from __future__ import annotations

import pytest
from pydantic import ValidationError

from arbor.apps.renode.regmap import Access, FieldMode, RegisterField, field_modes

R, W = FieldMode.READ, FieldMode.WRITE


@pytest.mark.parametrize(
    ("access", "mwv", "read_action", "expected"),
    [
        (Access.READ_WRITE, None, None, (R, W)),
        (Access.READ_ONLY, None, None, (R,)),
        (Access.WRITE_ONLY, None, None, (W,)),
        (Access.READ_WRITE, "oneToClear", None, (R, FieldMode.WRITE_ONE_TO_CLEAR)),
        (Access.READ_WRITE, "zeroToClear", None, (R, FieldMode.WRITE_ZERO_TO_CLEAR)),
        (Access.READ_WRITE, "oneToSet", None, (R, FieldMode.SET)),
        (Access.READ_WRITE, "oneToToggle", None, (R, FieldMode.TOGGLE)),
        (Access.WRITE_ONLY, "zeroToSet", None, (FieldMode.WRITE_ZERO_TO_SET,)),
        (Access.READ_WRITE, "clear", None, (R, FieldMode.WRITE_TO_CLEAR)),
        (Access.READ_WRITE, "set", None, (R, FieldMode.WRITE_TO_SET)),
        (Access.READ_WRITE, "modify", None, (R, W)),
        (Access.READ_ONLY, None, "clear", (R, FieldMode.READ_TO_CLEAR)),
        (Access.READ_ONLY, None, "set", (R, FieldMode.READ_TO_SET)),
        (Access.READ_ONLY, None, "modify", (R,)),
        (Access.WRITE_ONCE, None, None, (W,)),
        (Access.READ_WRITE_ONCE, None, None, (R, W)),
    ],
)
def test_svd_access_maps_to_renode_field_mode(
    access: Access, mwv: str | None, read_action: str | None, expected: tuple[FieldMode, ...]
) -> None:
    assert field_modes(access, mwv, read_action) == expected


def test_field_mask_and_bounds() -> None:
    f = RegisterField(name="X", bit_offset=4, bit_width=3, access=Access.READ_WRITE, modes=(R,))
    assert f.mask == 0b111_0000
    with pytest.raises(ValidationError):
        RegisterField(name="X", bit_offset=0, bit_width=0, access=Access.READ_WRITE, modes=())
