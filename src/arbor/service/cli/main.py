"""The ``arbor`` command: one typer app, one module per command group."""

from __future__ import annotations

import typer

from arbor.service.cli.agents import agents_app
from arbor.service.cli.autogen import autogen_app
from arbor.service.cli.batch import batch_app
from arbor.service.cli.bench import bench_app
from arbor.service.cli.chat import chat
from arbor.service.cli.doctor import doctor
from arbor.service.cli.keys import keys_app
from arbor.service.cli.mock import mock_upstream
from arbor.service.cli.renode import renode_app
from arbor.service.cli.run import run
from arbor.service.cli.runs import runs_app
from arbor.service.cli.serve import serve
from arbor.service.cli.team import team, workspace

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


def main() -> None:
    app()
