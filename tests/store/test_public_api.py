from __future__ import annotations

import ast
from pathlib import Path

import arbor.store
import arbor.store._util
import arbor.store.agents
import arbor.store.approvals
import arbor.store.batches
import arbor.store.engine
import arbor.store.events
import arbor.store.keys
import arbor.store.migrator
import arbor.store.run_leases
import arbor.store.runs
import arbor.store.tables
import arbor.store.usage
import arbor.store.vectors

STORE = Path(arbor.store.__file__).parent


def test_all_is_sorted_and_exactly_the_public_names() -> None:
    names = arbor.store.__all__
    assert names == sorted(names)
    public = {n for n in vars(arbor.store) if not n.startswith("_")}
    modules = {
        "agents",
        "annotations",
        "approvals",
        "batches",
        "engine",
        "events",
        "keys",
        "migrator",
        "run_leases",
        "runs",
        "tables",
        "usage",
        "vectors",
    }
    assert set(names) == public - modules
    for module in (
        arbor.store._util,
        arbor.store.agents,
        arbor.store.approvals,
        arbor.store.batches,
        arbor.store.engine,
        arbor.store.events,
        arbor.store.keys,
        arbor.store.migrator,
        arbor.store.run_leases,
        arbor.store.runs,
        arbor.store.tables,
        arbor.store.usage,
        arbor.store.vectors,
    ):
        # Order within modules is ruff's RUF022 (constants, classes, functions).
        assert all(hasattr(module, n) for n in module.__all__)


def test_store_imports_only_core_and_itself() -> None:
    """The layer rule: store sits on core and never imports llm, agents or higher."""
    for path in STORE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            for target in targets:
                if target == "arbor" or target.startswith("arbor."):
                    assert target.startswith(("arbor.core", "arbor.store")), (
                        f"{path.relative_to(STORE)} imports {target}"
                    )


def test_migrations_ship_inside_the_package() -> None:
    assert (STORE / "migrations" / "env.py").is_file()
    assert (STORE / "migrations" / "script.py.mako").is_file()
    assert (STORE / "migrations" / "versions" / "0001_usage_records.py").is_file()
    assert (STORE / "migrations" / "versions" / "0002_agents_runs.py").is_file()
    assert (STORE / "migrations" / "versions" / "0003_api_keys.py").is_file()
    assert arbor.store.head_revision() == "0005"
