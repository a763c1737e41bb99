"""The error an import of a module that could not be generated raises."""

from __future__ import annotations

__all__ = ["AutogenImportError"]


class AutogenImportError(ImportError):
    """``arbor.autogen`` could not produce a valid module; ``reason`` says why."""

    def __init__(self, module: str, names: list[str], reason: str, *, attempts: int = 0) -> None:
        tries = f" after {attempts} attempt(s)" if attempts else ""
        super().__init__(
            f"arbor.autogen could not generate module {module!r} defining "
            f"{', '.join(names) or '(no names)'}{tries}: {reason}",
            name=f"arbor.autogen.{module}",
        )
        self.module = module
        self.names = names
        self.reason = reason
        self.attempts = attempts
