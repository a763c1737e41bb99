"""The deterministic path end to end: SVD → register map → C# → validators → files.

``generate`` writes one peripheral's model, ``.repl``, Robot suite and JSON report;
``evaluate`` runs the same path over many peripherals with one mcs run per SVD. The agentic
refinement (planner/coder/reviewer on the workflow engine) will start from ``generate``'s
skeleton and this report.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from arbor.apps.renode.compile import compile_models
from arbor.apps.renode.emitter import EmittedModel, emit_model
from arbor.apps.renode.outputs import check_robot, repl_snippet, repl_type, robot_suite
from arbor.apps.renode.regmap import RegisterMap, RenodeError
from arbor.apps.renode.svd import load_device
from arbor.apps.renode.validate import Confidence, validate_source

__all__ = [
    "GenerationReport",
    "PeripheralResult",
    "SvdEvaluation",
    "evaluate",
    "generate",
]


class PeripheralResult(BaseModel):
    """One peripheral through the deterministic path."""

    model_config = ConfigDict(frozen=True)

    peripheral: str
    type: str
    registers: int
    fields: int
    interrupts: int
    syntax_errors: int
    compile_errors: int
    accuracy: float
    conventions: float
    confidence: float
    seconds: float
    error: str | None = None


class SvdEvaluation(BaseModel):
    model_config = ConfigDict(frozen=True)

    svd: str
    device: str
    peripherals: list[PeripheralResult]
    parse_seconds: float
    compile_seconds: float

    @property
    def passed(self) -> int:
        return sum(
            p.accuracy == 1.0 and p.syntax_errors == 0 and p.compile_errors == 0
            for p in self.peripherals
        )


class GenerationReport(BaseModel):
    """The JSON report ``generate`` writes beside the model."""

    device: str
    peripheral: str
    type: str
    base_address: str
    size: str
    registers: int
    fields: int
    interrupts: list[str]
    files: dict[str, str]
    confidence: Confidence
    robot_tests: int
    robot_errors: list[str]
    stage: str = "deterministic skeleton (agentic refinement not run)"


def _counts(regmap: RegisterMap) -> tuple[int, int]:
    return len(regmap.registers), sum(len(r.fields) for r in regmap.registers)


def generate(svd: Path, peripheral: str, out: Path) -> GenerationReport:
    """Write ``<Type>.cs``, ``<Type>.repl``, ``<Type>.robot`` and ``<Type>.json`` into ``out``."""
    regmap = load_device(svd).peripheral(peripheral)
    model = emit_model(regmap)
    compiled = compile_models({model.file_name: model.source})[model.file_name]
    confidence = validate_source(regmap, model.source, compiled)
    robot = robot_suite(regmap, model)
    robot_check = check_robot(robot)
    if out.exists() and not out.is_dir():
        raise RenodeError(f"output path {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        stem = model.type_name
        files = {
            "model": model.file_name,
            "repl": f"{stem}.repl",
            "robot": f"{stem}.robot",
            "report": f"{stem}.json",
        }
        (out / files["model"]).write_text(model.source, encoding="utf-8")
        (out / files["repl"]).write_text(repl_snippet(regmap, model), encoding="utf-8")
        (out / files["robot"]).write_text(robot, encoding="utf-8")
        registers, fields = _counts(regmap)
        report = GenerationReport(
            device=regmap.device,
            peripheral=regmap.peripheral,
            type=repl_type(model),
            base_address=f"0x{regmap.base_address:08X}",
            size=f"0x{regmap.size:X}",
            registers=registers,
            fields=fields,
            interrupts=[f"{i.name}@{i.value}" for i in regmap.interrupts],
            files=files,
            confidence=confidence,
            robot_tests=robot_check.tests,
            robot_errors=list(robot_check.errors),
        )
        (out / files["report"]).write_text(report.model_dump_json(indent=2), encoding="utf-8")
    except OSError as exc:
        raise RenodeError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    return report


def _refused(regmap: RegisterMap, error: str, seconds: float) -> PeripheralResult:
    registers, fields = _counts(regmap)
    return PeripheralResult(
        peripheral=regmap.peripheral,
        type="",
        registers=registers,
        fields=fields,
        interrupts=len(regmap.interrupts),
        syntax_errors=0,
        compile_errors=0,
        accuracy=0.0,
        conventions=0.0,
        confidence=0.0,
        seconds=round(seconds, 4),
        error=error,
    )


def evaluate(svd: Path, peripherals: list[str] | None = None) -> SvdEvaluation:
    """The deterministic path over ``peripherals`` (all when None), one mcs run in total."""
    started = time.perf_counter()
    device = load_device(svd)
    parse_seconds = time.perf_counter() - started
    names = device.peripheral_names if peripherals is None else peripherals
    built: list[tuple[RegisterMap, EmittedModel, float]] = []
    refused: list[PeripheralResult] = []
    for name in names:
        t0 = time.perf_counter()
        regmap = device.peripheral(name)  # an unknown name is bad input: it stops the run
        try:
            built.append((regmap, emit_model(regmap), time.perf_counter() - t0))
        except RenodeError as exc:  # a map the skeleton cannot express fails on its own
            refused.append(_refused(regmap, str(exc), time.perf_counter() - t0))
    t0 = time.perf_counter()
    compiled = compile_models({m.file_name: m.source for _, m, _ in built})
    compile_seconds = time.perf_counter() - t0
    # Each peripheral's time includes its share of the one SVD parse and the one mcs run.
    share = (parse_seconds + compile_seconds) / max(1, len(built))
    results: list[PeripheralResult] = []
    for regmap, model, emit_seconds in built:
        t0 = time.perf_counter()
        conf = validate_source(regmap, model.source, compiled[model.file_name])
        registers, fields = _counts(regmap)
        results.append(
            PeripheralResult(
                peripheral=regmap.peripheral,
                type=repl_type(model),
                registers=registers,
                fields=fields,
                interrupts=len(regmap.interrupts),
                syntax_errors=conf.syntax.failures,
                compile_errors=conf.compile.failures,
                accuracy=conf.accuracy.score,
                conventions=conf.conventions.score,
                confidence=conf.confidence,
                seconds=round(emit_seconds + share + time.perf_counter() - t0, 4),
            )
        )
    order = {name.lower(): i for i, name in enumerate(names)}
    results = sorted([*results, *refused], key=lambda p: order.get(p.peripheral.lower(), 0))
    return SvdEvaluation(
        svd=svd.name,
        device=device.name,
        peripherals=results,
        parse_seconds=round(parse_seconds, 4),
        compile_seconds=round(compile_seconds, 4),
    )
