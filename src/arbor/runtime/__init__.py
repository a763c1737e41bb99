"""The runtime layer: batches (datasets run through templates, agents or workflows) and
the executors that run them. The local asyncio executor is the default; ``runtime``
imports ``agents``, ``llm``, ``store`` and ``core``, never ``service``."""

from __future__ import annotations

from arbor.runtime.batches import BatchConflictError, BatchService, ExportFormat
from arbor.runtime.datasets import DatasetError, read_dataset
from arbor.runtime.executor import LiveProgress, LocalExecutor
from arbor.runtime.items import ItemError, TemplateSyntaxError
from arbor.runtime.pacing import PacedRateLimiter
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
    "TemplateSyntaxError",
    "read_dataset",
]
