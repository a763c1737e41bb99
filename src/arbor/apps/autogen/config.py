"""What one ``arbor.autogen.init(...)`` asks for: the library description, the model, and how
generated code is checked and cached."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AutogenConfig"]


class AutogenConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: What the generated library is for; part of every prompt and of every cache key.
    description: str = Field(min_length=1)
    #: ``provider:model``; ``None`` means the settings' default model.
    model: str | None = None
    #: Extra attempts after an invalid reply (each sees the previous error).
    retries: int = Field(2, ge=0, le=10)
    #: Import the module and call its argument-less functions in the OS sandbox first.
    smoke: bool = False
    #: Let the smoke call run without OS isolation when it is unavailable (reported).
    allow_unisolated: bool = False
    #: Module roots or dotted names the import policy lets through (e.g. ``"socket"``).
    allow_imports: tuple[str, ...] = ()
    #: Keep generated modules (memory, disk under ARBOR_HOME/autogen, Redis when set).
    cache: bool = True
    #: Token budget of the codebase context in the prompt.
    context_tokens: int = Field(2000, ge=0)
    #: Largest reply the model may write.
    max_tokens: int = Field(2048, ge=64)
    #: Modules generated at once by ``prefetch``.
    concurrency: int = Field(4, ge=1, le=64)
