"""``arbor renode list|generate|eval``: Renode peripheral models from CMSIS-SVD files.

This build runs the deterministic path (register map → C# skeleton → validators); the agentic
refinement on the workflow engine builds on it. Bad input (missing or malformed SVD, unknown
peripheral, unwritable output) exits 2 with a one-line reason.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Column, Table

from arbor.cli._common import EXIT_ERROR, EXIT_USAGE, fail

if TYPE_CHECKING:  # cmsis-svd, tree-sitter and robotframework load only when a command runs
    from arbor.apps.renode.pipeline import SvdEvaluation

__all__ = ["renode_app"]

T = TypeVar("T")

renode_app = typer.Typer(
    help="Renode peripheral models (C#) from CMSIS-SVD register maps.",
    no_args_is_help=True,
)

_out = Console(highlight=False, soft_wrap=True)

SvdOption = Annotated[Path, typer.Option("--svd", help="CMSIS-SVD file.", show_default=False)]
DEFAULT_RESULTS = Path("benchmarks/results/renode.json")


def _guard(fn: Callable[..., T], *args: object) -> T:
    """Call into the generator; its input errors exit 2, a missing mcs exits 1."""
    from arbor.apps.renode.compile import McsNotFoundError
    from arbor.apps.renode.regmap import RenodeError

    try:
        result = fn(*args)
    except McsNotFoundError as exc:
        fail(str(exc), EXIT_ERROR)
    except RenodeError as exc:
        fail(str(exc), EXIT_USAGE)
    return result


@renode_app.command("list")
def list_peripherals(
    svd: SvdOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List the peripherals of an SVD file with their base, size, registers and interrupts."""
    from arbor.apps.renode.svd import load_device

    device = _guard(load_device, svd)
    maps = _guard(device.register_maps)
    rows: list[dict[str, Any]] = [
        {
            "id": m.peripheral,
            "name": m.peripheral,
            "group": m.group,
            "base_address": f"0x{m.base_address:08X}",
            "size": f"0x{m.size:X}",
            "registers": len(m.registers),
            "fields": sum(len(r.fields) for r in m.registers),
            "interrupts": [f"{i.name}@{i.value}" for i in m.interrupts],
        }
        for m in maps
    ]
    if as_json:
        _out.print_json(json.dumps(rows))
        return
    table = Table(
        "peripheral",
        "base",
        "size",
        "registers",
        "fields",
        "interrupts",
        title=f"{device.name} ({svd.name})",
    )
    for row in rows:
        table.add_row(
            row["name"],
            row["base_address"],
            row["size"],
            str(row["registers"]),
            str(row["fields"]),
            ", ".join(row["interrupts"]) or "-",
        )
    _out.print(table)


@renode_app.command("generate")
def generate(
    svd: Annotated[
        Path | None, typer.Option("--svd", help="CMSIS-SVD file.", show_default=False)
    ] = None,
    peripheral: Annotated[
        str | None, typer.Option("--peripheral", "-p", help="Peripheral name.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("."),
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Run the agents on this model.")
    ] = None,
    request: Annotated[
        str | None,
        typer.Option("--request", help="With --model: e.g. 'USART1 of STM32F103xx'."),
    ] = None,
    description: Annotated[
        Path | None,
        typer.Option("--description", help="With --model: a text file describing the registers."),
    ] = None,
    max_iterations: Annotated[
        int, typer.Option("--max-iterations", min=1, max=10, help="Refinement iterations.")
    ] = 3,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=16, help="Cap on each agent reply.")
    ] = None,
) -> None:
    """Write <Name>.cs, .repl, .robot and a .json report for one peripheral.

    Without --model: the deterministic path only (register map, C# skeleton, then the
    validators: syntax, mcs compile, register accuracy, conventions); the agentic refinement
    is not run here. With --model: the renode workflow (planner, coder and reviewer agents
    adding behaviour behind the validator gate, which keeps the best version), shown live;
    the input is --svd/--peripheral, --request or --description.
    """
    if model is not None:
        _agentic(model, svd, peripheral, out, request, description, max_iterations, max_tokens)
        return
    if request is not None or description is not None:
        fail("--request and --description need --model (the agents read them)", EXIT_USAGE)
    if svd is None or peripheral is None:
        fail("give --svd FILE and --peripheral NAME (or --model with --request)", EXIT_USAGE)
    from arbor.apps.renode.pipeline import generate as run_generate

    report = _guard(run_generate, svd, peripheral, out)
    conf = report.confidence
    table = Table("validator", "score", "detail", title=f"{report.device} {report.peripheral}")
    for name in ("syntax", "compile", "accuracy", "conventions"):
        part = getattr(conf, name)
        table.add_row(name, f"{part.score:.3f}", part.detail)
    _out.print(table)
    for name in ("syntax", "compile", "accuracy", "conventions"):
        for problem in getattr(conf, name).problems[:5]:
            _out.print(f"  {name}: {problem}")
    _out.print(f"confidence {conf.confidence:.3f}; robot suite: {report.robot_tests} tests")
    for kind, name in report.files.items():
        _out.print(f"{kind}: {out / name}")
    if not conf.passed or report.robot_errors:
        fail("the generated model did not pass every validator (see above)", EXIT_ERROR)


def _agentic(
    model: str,
    svd: Path | None,
    peripheral: str | None,
    out: Path,
    request: str | None,
    description: Path | None,
    max_iterations: int,
    max_tokens: int | None,
) -> None:
    from arbor.cli._common import settings_or_exit
    from arbor.cli.renode_agents import run_agentic

    state: dict[str, Any] = {"max_iterations": max_iterations, "max_tokens": max_tokens}
    if svd is not None:
        if not svd.is_file():
            fail(f"SVD file not found: {svd}", EXIT_USAGE)
        if not peripheral:
            fail("--svd needs --peripheral NAME", EXIT_USAGE)
        state.update(svd=str(svd), peripheral=peripheral)
    elif description is not None:
        try:
            state["description"] = description.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {description}: {exc}", EXIT_USAGE)
    else:
        state["task"] = request or ""
    run_agentic(settings_or_exit(), model, state, out, _out)


def _results_json(evals: list[SvdEvaluation]) -> dict[str, Any]:
    """The bench-style JSON document (see INTERFACES.md, benchmark output)."""
    peripherals = [p for e in evals for p in e.peripherals]
    total = len(peripherals)
    seconds = [p.seconds for p in peripherals]
    accuracy = min((p.accuracy for p in peripherals), default=1.0)
    syntax = sum(p.syntax_errors for p in peripherals)
    compile_errors = sum(p.compile_errors for p in peripherals)

    def target(name: str, value: float, op: str, limit: float) -> dict[str, Any]:
        met = value >= limit if op == ">=" else value <= limit
        return {"name": name, "value": value, "op": op, "limit": limit, "met": met}

    return {
        "bench": "renode",
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {
            "arbor": version("arbor"),
            "cmsis-svd": version("cmsis-svd"),
            "tree-sitter-c-sharp": version("tree-sitter-c-sharp"),
        },
        "svds": [
            {
                "svd": e.svd,
                "device": e.device,
                "peripherals": len(e.peripherals),
                "passed": e.passed,
                "parse_seconds": e.parse_seconds,
                "compile_seconds": e.compile_seconds,
                "seconds_per_peripheral": round(
                    sum(p.seconds for p in e.peripherals) / max(1, len(e.peripherals)), 4
                ),
                "results": [p.model_dump() for p in e.peripherals],
            }
            for e in evals
        ],
        "peripherals": total,
        "passed": sum(e.passed for e in evals),
        "seconds_per_peripheral": round(sum(seconds) / max(1, total), 4),
        "targets": [
            target("min_register_accuracy", accuracy, ">=", 1.0),
            target("syntax_errors", syntax, "<=", 0),
            target("compile_errors", compile_errors, "<=", 0),
        ],
    }


@renode_app.command("eval")
def evaluate(
    svd: Annotated[list[Path], typer.Option("--svd", help="CMSIS-SVD file (repeatable).")],
    all_peripherals: Annotated[
        bool, typer.Option("--all", help="Every peripheral of each SVD.")
    ] = False,
    peripheral: Annotated[
        list[str] | None, typer.Option("--peripheral", "-p", help="Peripheral (repeatable).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Results JSON.")] = DEFAULT_RESULTS,
) -> None:
    """Run the deterministic path over peripherals and score it (one mcs run per SVD).

    Prints a table and writes benchmarks/results/renode.json: peripherals, pass counts
    (accuracy 1.0, zero syntax and compile errors) and seconds per peripheral.
    """
    from arbor.apps.renode.pipeline import evaluate as run_evaluate

    if all_peripherals == bool(peripheral):
        fail("give either --all or --peripheral NAME", EXIT_USAGE)
    evals = [_guard(run_evaluate, path, None if all_peripherals else peripheral) for path in svd]
    doc = _results_json(evals)
    table = Table(
        Column("device", no_wrap=True),
        "periph.",
        "passed",
        "min acc.",
        "syntax",
        "compile",
        "s/periph.",
        title="Renode deterministic path (syntax, compile: error counts)",
    )
    for e, row in zip(evals, doc["svds"], strict=True):
        table.add_row(
            e.device,
            str(len(e.peripherals)),
            str(e.passed),
            f"{min((p.accuracy for p in e.peripherals), default=1.0):.3f}",
            str(sum(p.syntax_errors for p in e.peripherals)),
            str(sum(p.compile_errors for p in e.peripherals)),
            f"{row['seconds_per_peripheral']:.4f}",
        )
    _out.print(table)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_USAGE)
    _out.print(f"wrote {out}")
    failed = [
        f"{e.svd}:{p.peripheral}"
        for e in evals
        for p in e.peripherals
        if not (p.accuracy == 1.0 and p.syntax_errors == 0 and p.compile_errors == 0)
    ]
    for e in evals:
        for p in e.peripherals:
            if p.error:
                _out.print(f"{e.svd}:{p.peripheral}: {p.error}")
    if failed:
        fail(f"{len(failed)} peripheral(s) failed: {', '.join(failed[:10])}", EXIT_ERROR)
    sys.stdout.flush()


def _register_retrieval() -> None:
    from arbor.cli.renode_retrieval import register

    register(renode_app)


_register_retrieval()
