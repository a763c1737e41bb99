"""The test tree's own rules: pytest imports test modules by basename (rootdir-relative
"prepend" mode, so helpers like ``_openai.py`` import plainly), so two test files with one
name would make one of them fail to collect."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).parent


def test_test_module_basenames_are_unique() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name.startswith(("test_", "_")) and path.name != "__init__.py":
            seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"rename one of each: {clashes}"
