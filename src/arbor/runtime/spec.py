"""What a batch runs and how: the typed form of the ``batches.spec`` column.

One of ``template`` (Jinja2 text rendered per row), ``agent`` (a stored agent's name) or
``workflow`` (a workflow's name) is set, matching ``kind``; the options bound how hard the
batch may push the provider (concurrency, requests and tokens per minute) and what it may
spend. A stored spec is read back with :meth:`BatchSpec.model_validate`, so a resume runs
with exactly the options the batch was created with.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from arbor.store.batches import BatchKind

__all__ = ["BatchOptions", "BatchSpec"]

_MODEL_ID = re.compile(r"^[A-Za-z0-9_.-]+:\S+$")


class BatchOptions(BaseModel):
    """Limits and knobs of one batch."""

    model_config = ConfigDict(extra="forbid")

    #: Items in flight at once.
    concurrency: int = Field(16, ge=1, le=4096)
    #: Requests per minute to the model, spread evenly (no bursts); None: the configured limit.
    rpm: int | None = Field(None, ge=1)
    #: Tokens per minute to the model (prompt + reserved completion).
    tpm: int | None = Field(None, ge=1)
    #: USD the batch may spend; when spent it pauses with the rest pending.
    budget_usd: float | None = Field(None, ge=0)
    #: Times an item is tried (each after the LLM layer's own retries) before it fails.
    max_attempts: int = Field(3, ge=1, le=20)
    #: How long a claimed item stays leased without a renewal (a dead executor's items
    #: become claimable again after this).
    lease_seconds: float = Field(60.0, gt=0, le=3600)
    #: Sampling temperature of template items; 0 (the default) makes identical prompts
    #: answerable from the cache.
    temperature: float | None = Field(0.0, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)


class BatchSpec(BaseModel):
    """The dataset's treatment: exactly one of template, agent, workflow (per ``kind``)."""

    model_config = ConfigDict(extra="forbid")

    kind: BatchKind
    template: str | None = None
    agent: str | None = None
    workflow: str | None = None
    #: Model id (``provider:model``); None: the agent's own or the settings' default.
    model: str | None = None
    options: BatchOptions = Field(default_factory=BatchOptions)
    #: The API key that created the batch (through the service); its calls are attributed
    #: to it by whichever server drives the batch.
    key_id: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _one_target(self) -> BatchSpec:
        given = {k: getattr(self, k) for k in ("template", "agent", "workflow")}
        chosen = [k for k, v in given.items() if v is not None]
        if chosen != [self.kind]:
            raise ValueError(
                f"a {self.kind} batch needs exactly its {self.kind!r} set (got {chosen or 'none'})"
            )
        if not str(given[self.kind]).strip():
            raise ValueError(f"the batch's {self.kind} is empty")
        if self.model is not None and not _MODEL_ID.match(self.model):
            raise ValueError(f"model must look like provider:model, got {self.model!r}")
        return self

    @property
    def target(self) -> str:
        """The template text, agent name or workflow name."""
        value: Any = getattr(self, self.kind)
        return str(value)

    def describe(self) -> str:
        """A short human name: the agent or workflow, or the template's first line."""
        if self.kind == "template":
            first = self.target.strip().splitlines()[0]
            return f"template: {first[:60]}"
        return f"{self.kind}: {self.target}"
