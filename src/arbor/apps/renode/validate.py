"""The validator gate: syntax, compile, register accuracy and conventions → one confidence.

``confidence = syntax * compile * (0.8 * accuracy + 0.2 * conventions)``: code that does not
parse or build is worth nothing however accurate it looks, and among builds accuracy against
the register map dominates. The agents' refinement loop (next) routes on this number and keeps
the best version; the parts say what to fix.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from arbor.apps.renode.accuracy import check_accuracy, check_conventions
from arbor.apps.renode.compile import CompileResult, compile_models
from arbor.apps.renode.csharp import parse_csharp, read_model
from arbor.apps.renode.emitter import EmittedModel
from arbor.apps.renode.regmap import RegisterMap

__all__ = ["Confidence", "ScorePart", "validate_many", "validate_source"]

_ACCURACY_WEIGHT = 0.8


class ScorePart(BaseModel):
    """One validator's score in [0, 1] and what it found wrong."""

    model_config = ConfigDict(frozen=True)

    score: float
    passed: bool
    failures: int = 0
    detail: str = ""
    problems: tuple[str, ...] = ()


class Confidence(BaseModel):
    model_config = ConfigDict(frozen=True)

    confidence: float
    syntax: ScorePart
    compile: ScorePart
    accuracy: ScorePart
    conventions: ScorePart

    @property
    def passed(self) -> bool:
        return all(p.passed for p in (self.syntax, self.compile, self.accuracy, self.conventions))


def validate_source(regmap: RegisterMap, source: str, compiled: CompileResult) -> Confidence:
    """Score ``source`` (a model of ``regmap``) given its compile result."""
    _, syntax = parse_csharp(source)
    syntax_part = ScorePart(
        score=1.0 if syntax.ok else 0.0,
        passed=syntax.ok,
        failures=len(syntax.errors),
        detail=f"{len(syntax.errors)} syntax error(s)",
        problems=tuple(f"{line}:{col}: {what}" for line, col, what in syntax.errors[:20]),
    )
    compile_part = ScorePart(
        score=1.0 if compiled.ok else 0.0,
        passed=compiled.ok,
        failures=len(compiled.errors),
        detail=f"{len(compiled.errors)} compile error(s)",
        problems=compiled.errors[:20],
    )
    facts = read_model(source)
    acc = check_accuracy(regmap, facts)
    accuracy_part = ScorePart(
        score=acc.score,
        passed=acc.matched == acc.total,
        failures=acc.total - acc.matched,
        detail=f"{acc.matched}/{acc.total} registers and fields match",
        problems=acc.mismatches,
    )
    conv = check_conventions(regmap, facts)
    conventions_part = ScorePart(
        score=conv.score,
        passed=not conv.failed,
        failures=len(conv.failed),
        detail=f"{len(conv.passed)}/{len(conv.passed) + len(conv.failed)} conventions hold",
        problems=conv.failed,
    )
    weighted = _ACCURACY_WEIGHT * acc.score + (1 - _ACCURACY_WEIGHT) * conv.score
    return Confidence(
        confidence=round(syntax_part.score * compile_part.score * weighted, 6),
        syntax=syntax_part,
        compile=compile_part,
        accuracy=accuracy_part,
        conventions=conventions_part,
    )


def validate_many(models: list[tuple[RegisterMap, EmittedModel]]) -> list[Confidence]:
    """Validate several models with a single mcs run (type names must be distinct)."""
    sources = {m.file_name: m.source for _, m in models}
    if len(sources) != len(models):
        raise ValueError("models to validate together need distinct type names")
    compiled = compile_models(sources)
    return [validate_source(r, m.source, compiled[m.file_name]) for r, m in models]
