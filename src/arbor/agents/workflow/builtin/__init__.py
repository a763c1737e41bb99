"""Workflows that ship with Arbor's agents layer; they are declared as ``arbor.workflows``
entry points (see :mod:`arbor.agents.workflow.registry`) like every other workflow."""

from __future__ import annotations

from arbor.agents.workflow.builtin.review_loop import ReviewLoopState, review_loop

__all__ = ["ReviewLoopState", "review_loop"]
