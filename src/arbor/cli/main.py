"""The ``arbor`` command: one typer app, one module per command group."""

from __future__ import annotations

import typer

from arbor.cli.agents import agents_app
from arbor.cli.autogen import autogen_app
from arbor.cli.batch import batch_app
from arbor.cli.bench import bench_app
from arbor.cli.chat import chat
from arbor.cli.doctor import doctor
from arbor.cli.keys import keys_app
from arbor.cli.mock import mock_upstream
from arbor.cli.renode import renode_app
from arbor.cli.run import run
from arbor.cli.runs import runs_app
from arbor.cli.serve import serve
from arbor.cli.team import team, workspace

__all__ = ["app", "main"]

app = typer.Typer(
    name="arbor",
    help="Arbor: run teams of LLM agents in production.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("doctor")(doctor)
app.command("chat")(chat)
app.command("mock-upstream")(mock_upstream)
app.add_typer(bench_app, name="bench")
app.command("run")(run)
app.add_typer(runs_app, name="runs")
app.add_typer(batch_app, name="batch")
app.add_typer(agents_app, name="agents")
app.add_typer(keys_app, name="keys")
app.add_typer(renode_app, name="renode")
app.command("team")(team)
app.add_typer(autogen_app, name="autogen")
runs_app.command("workspace")(workspace)
app.command("serve")(serve)


def _version(value: bool) -> None:
    if value:
        from arbor import __version__

        typer.echo(f"arbor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Arbor: run teams of LLM agents in production."""


def main() -> None:
    app()
