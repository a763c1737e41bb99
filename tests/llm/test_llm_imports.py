"""Inside the LLM layer, only the package face and the modules that build clients import
``arbor.llm.client``: the pipeline and its accounting take the client's parts, never the
client (that tie was the layer's import cycle; ``tests/test_layers.py`` forbids cycles)."""

from __future__ import annotations

import grimp

#: Modules that build or wrap clients: above the client, never imported by it.
ABOVE_CLIENT = {"arbor.llm", "arbor.llm.redis_backends", "arbor.llm.setup"}


def test_only_modules_above_the_client_import_it() -> None:
    graph = grimp.build_graph("arbor")  # TYPE_CHECKING imports count
    importers = {
        m
        for m in graph.find_modules_that_directly_import("arbor.llm.client")
        if m == "arbor.llm" or m.startswith("arbor.llm.")
    }
    assert "arbor.llm.setup" in importers  # the graph sees the imports at all
    assert importers <= ABOVE_CLIENT, sorted(importers - ABOVE_CLIENT)
