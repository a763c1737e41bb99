"""No import cycle inside ``arbor.agents``: for any two of its modules, at most one imports
the other, directly or through a chain (``TYPE_CHECKING`` imports count: they tie the
modules as much for a reader and for mypy).

Value types (results, errors, the node context, the agent spec) live in their own small
modules so that the agent and its loop, definitions and supervision, and the workflow
runner and what it runs each depend one way only.
"""

from __future__ import annotations

import itertools

import grimp
import pytest

LAYER = "arbor.agents"


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("arbor", cache_dir=None)


def cycles(graph: grimp.ImportGraph, package: str = LAYER) -> list[str]:
    """Every pair of modules under ``package`` with a chain of imports each way, as the two
    shortest chains."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(f"{package}."))
    found = []
    for a, b in itertools.combinations(modules, 2):
        there = graph.find_shortest_chain(importer=a, imported=b)
        back = graph.find_shortest_chain(importer=b, imported=a) if there else None
        if there and back:
            found.append(f"{' -> '.join(there)}  and  {' -> '.join(back)}")
    return found


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return _graph()


def test_the_agents_layer_has_no_import_cycle(graph: grimp.ImportGraph) -> None:
    found = cycles(graph)
    assert not found, "import cycles in arbor.agents:\n" + "\n".join(found)


def test_the_graph_covers_the_layer(graph: grimp.ImportGraph) -> None:
    # A check over an empty or partial graph would pass for nothing.
    for module in ("arbor.agents.agent", "arbor.agents._loop", "arbor.agents.workflow.runner"):
        assert module in graph.modules
    assert graph.direct_import_exists(importer="arbor.agents.agent", imported="arbor.agents._loop")


def test_a_reintroduced_cycle_is_caught() -> None:
    graph = _graph()
    graph.add_import(importer="arbor.agents._loop", imported="arbor.agents.agent")
    graph.add_import(
        importer="arbor.agents.workflow.context", imported="arbor.agents.workflow.runner"
    )
    found = cycles(graph)
    assert any(c.startswith("arbor.agents._loop -> arbor.agents.agent") for c in found), found
    assert any("arbor.agents.workflow.context -> arbor.agents.workflow.runner" in c for c in found)
