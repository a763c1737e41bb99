"""The runtime layer: batches (datasets run through templates, agents or workflows) and
the executors that run them, and the sandbox. The local asyncio executor is the default;
``RayExecutor`` (the optional ``ray`` extra, imported only when used) runs batches on Ray;
``runtime`` imports ``agents``, ``llm``, ``store`` and ``core``, never ``service``.

Names load on first use, so importing a light submodule (``arbor.runtime.sandbox``) does
not import the batch engine's database and agent stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arbor.core.lazy import lazy_exports

if TYPE_CHECKING:
    from arbor.runtime.batches import BatchConflictError, BatchService, ExportFormat
    from arbor.runtime.datasets import DatasetError, read_dataset
    from arbor.runtime.executor import LiveProgress, LocalExecutor
    from arbor.runtime.items import ItemError, TemplateSyntaxError
    from arbor.runtime.pacing import PacedRateLimiter
    from arbor.runtime.ray_executor import RayExecutor
    from arbor.runtime.spec import BatchOptions, BatchSpec

__all__ = [
    "BatchConflictError",
    "BatchOptions",
    "BatchService",
    "BatchSpec",
    "DatasetError",
    "ExportFormat",
    "ItemError",
    "LiveProgress",
    "LocalExecutor",
    "PacedRateLimiter",
    "RayExecutor",
    "TemplateSyntaxError",
    "read_dataset",
]

_HOMES = {
    "BatchConflictError": "batches",
    "BatchService": "batches",
    "ExportFormat": "batches",
    "DatasetError": "datasets",
    "read_dataset": "datasets",
    "LiveProgress": "executor",
    "LocalExecutor": "executor",
    "ItemError": "items",
    "TemplateSyntaxError": "items",
    "PacedRateLimiter": "pacing",
    "RayExecutor": "ray_executor",
    "BatchOptions": "spec",
    "BatchSpec": "spec",
}


__getattr__, __dir__ = lazy_exports(
    __name__, {name: f"arbor.runtime.{home}" for name, home in _HOMES.items()}
)
