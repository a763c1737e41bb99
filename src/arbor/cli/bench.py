"""``arbor bench NAME --out FILE``: run a benchmark from the repository's ``benchmarks/``.

Benchmarks compare Arbor with its peers side by side in one process run and need the peers
installed (the ``bench`` dependency group); they live outside the package on purpose.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import typer

from arbor.cli._common import EXIT_USAGE, fail

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Benchmarks against peers (writes JSON).", no_args_is_help=True)


def _benchmarks_dir() -> Path:
    candidates = [Path.cwd() / "benchmarks", Path(__file__).resolve().parents[3] / "benchmarks"]
    for c in candidates:
        if c.is_dir():
            return c
    fail("benchmarks/ not found: run `arbor bench` from an Arbor checkout", EXIT_USAGE)


def _run(name: str, args: list[str]) -> None:
    script = _benchmarks_dir() / f"bench_{name}.py"
    if not script.is_file():
        fail(f"no benchmark named {name!r} ({script} is missing)", EXIT_USAGE)
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")


@bench_app.command("llm")
def bench_llm(
    out: Path = typer.Option(..., "--out", help="Where to write the JSON results."),
    quick: bool = typer.Option(False, "--quick", help="Few iterations (a smoke run)."),
) -> None:
    """Arbor's LLM client vs the openai SDK, LiteLLM and LangChain against the mock."""
    _run("llm", ["--out", str(out), *(["--quick"] if quick else [])])


@bench_app.command("primitives")
def bench_primitives(
    out: Path = typer.Option(..., "--out", help="Where to write the JSON results."),
    quick: bool = typer.Option(False, "--quick", help="Few iterations (a smoke run)."),
) -> None:
    """Retry loop vs tenacity, and the fast paths of breaker, limiter and budgets."""
    _run("primitives", ["--out", str(out), *(["--quick"] if quick else [])])


@bench_app.command("agents")
def bench_agents(
    out: Path = typer.Option(..., "--out", help="Where to write the JSON results."),
    quick: bool = typer.Option(False, "--quick", help="Few iterations (a smoke run)."),
) -> None:
    """Workflow per-node overhead vs LangGraph; agent instantiation vs Agno and PydanticAI."""
    _run("agents", ["--out", str(out), *(["--quick"] if quick else [])])


@bench_app.command("gateway")
def bench_gateway(
    out: Path = typer.Option(..., "--out", help="Where to write the JSON results."),
    quick: bool = typer.Option(False, "--quick", help="Few requests (a smoke run)."),
    only: list[str] = typer.Option(
        [], "--only", help="Only these targets: direct, arbor, litellm (repeat or comma-separate)."
    ),
) -> None:
    """`arbor serve` vs LiteLLM's proxy vs direct, in front of the same mock upstream."""
    only = [name.strip() for value in only for name in value.split(",") if name.strip()]
    bad = sorted(set(only) - {"direct", "arbor", "litellm"})
    if bad:
        fail(f"--only takes direct, arbor or litellm, not {', '.join(bad)}", EXIT_USAGE)
    args = ["--out", str(out), *(["--quick"] if quick else [])]
    _run("gateway", [*args, *(["--only", *only] if only else [])])


@bench_app.command("batch")
def bench_batch(
    out: Path = typer.Option(..., "--out", help="Where to write the JSON results."),
    quick: bool = typer.Option(False, "--quick", help="Small sizes (a smoke run)."),
) -> None:
    """Batches under a quantized RPM limit vs LiteLLM, the openai SDK and LangChain; creation
    time and memory of 100,000-item batches."""
    _run("batch", ["--out", str(out), *(["--quick"] if quick else [])])


@bench_app.command("renode")
def bench_renode(
    out: Path = typer.Option(..., "--out", help="Where to write the JSON results."),
    quick: bool = typer.Option(False, "--quick", help="One SVD only (a smoke run)."),
) -> None:
    """The Renode generator's deterministic path over every peripheral of the shared SVDs
    (accuracy, syntax and compile errors, seconds per peripheral); same as `arbor renode eval
    --all` over the SVDs kept in tests/data/svd."""
    from arbor.cli.renode import evaluate

    svds = sorted((_benchmarks_dir().parent / "tests" / "data" / "svd").glob("*.svd"))
    if not svds:
        fail("tests/data/svd/*.svd not found: run `arbor bench` from an Arbor checkout", EXIT_USAGE)
    evaluate(svds[:1] if quick else svds, all_peripherals=True, peripheral=None, out=out)
