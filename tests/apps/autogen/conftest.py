"""Every autogen test leaves sys.meta_path, sys.modules and sys.excepthook as it found them."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_import_state() -> Iterator[None]:
    meta_path = list(sys.meta_path)
    modules = set(sys.modules)
    hook = sys.excepthook
    yield
    import arbor.autogen

    arbor.autogen.reset()
    sys.meta_path[:] = meta_path
    for name in set(sys.modules) - modules:
        if name.startswith("arbor.autogen."):
            del sys.modules[name]
    sys.excepthook = hook
    leaked = [n for n in sys.modules if n.startswith("arbor.autogen.")]
    assert not leaked, leaked
