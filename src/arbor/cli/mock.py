"""``arbor mock-upstream``: the OpenAI-compatible test server, as a command."""

from __future__ import annotations

import typer

from arbor.cli._common import EXIT_USAGE, fail

#: Kept here (and checked against the server's list by a test) so `arbor --help` does not
#: import the server.
FAIL_MODES = ("500", "429", "hang", "disconnect", "midstream")

__all__ = ["mock_upstream"]


def mock_upstream(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8901, "--port", min=0, max=65535),
    latency_ms: float = typer.Option(0.0, "--latency-ms", min=0.0),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests/min (per-second windows)."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens/min (per-second windows)."),
    fail_rate: float = typer.Option(0.0, "--fail-rate", min=0.0, max=1.0),
    fail_mode: str = typer.Option("500", "--fail-mode", help="500|429|hang|disconnect|midstream"),
    seed: int = typer.Option(0, "--seed"),
    chunks: int = typer.Option(8, "--chunks", min=1, help="Content chunks per stream."),
    chunk_delay_ms: float = typer.Option(0.0, "--chunk-delay-ms", min=0.0),
) -> None:
    """Serve a deterministic OpenAI-compatible upstream with limits and injected faults."""
    from arbor.testing.mock_upstream import MockConfig, run

    if fail_mode not in FAIL_MODES:
        fail(f"--fail-mode must be one of {', '.join(FAIL_MODES)}, got {fail_mode!r}", EXIT_USAGE)
    run(
        MockConfig(
            host=host,
            port=port,
            latency_ms=latency_ms,
            rpm=rpm,
            tpm=tpm,
            fail_rate=fail_rate,
            fail_mode=fail_mode,
            seed=seed,
            chunks=chunks,
            chunk_delay_ms=chunk_delay_ms,
        )
    )
