"""``arbor serve``: the HTTP service under uvicorn, one worker.

The service context (database, LLM client, keys) is opened *before* the server binds, so a bad
setting exits 2 with a one-line reason instead of a lifespan traceback. On SIGTERM/SIGINT
uvicorn stops accepting connections and lets in-flight requests finish for up to
``service.shutdown_timeout`` seconds; SSE streams (sse-starlette) see the shutdown and end.
Only then are runs stopped (left resumable), usage flushed and the database closed.
"""

from __future__ import annotations

import asyncio
import signal
from types import FrameType

import typer

from arbor.core.config import Settings
from arbor.core.errors import ArborError
from arbor.service.cli._common import EXIT_ERROR, exit_code_for, fail, settings_or_exit

__all__ = ["serve"]


def serve(
    host: str | None = typer.Option(None, "--host", help="Bind address (ARBOR_HOST)."),
    port: int | None = typer.Option(
        None, "--port", min=0, max=65535, help="Port (ARBOR_PORT; 0 picks a free one)."
    ),
) -> None:
    """Serve the API (OpenAI-compatible endpoints, REST, metrics) on HOST:PORT."""
    settings = settings_or_exit()
    bind_host = host or settings.host
    bind_port = settings.port if port is None else port
    try:
        started = _run(settings, bind_host, bind_port)
    except ArborError as exc:
        fail(str(exc), exit_code_for(exc))
    except SystemExit as exc:  # uvicorn exits on its own when it cannot bind (code 1 or 3)
        if exc.code not in (0, None):
            fail(f"could not serve on {bind_host}:{bind_port} (see the log above)", EXIT_ERROR)
        raise
    if not started:
        fail(f"the server did not start on {bind_host}:{bind_port} (see the log above)", EXIT_ERROR)


def _run(settings: Settings, host: str, port: int) -> bool:
    import uvicorn

    from arbor.service.app import create_app
    from arbor.service.context import open_context

    config = uvicorn.Config(
        "arbor.service.app:create_app",  # replaced below; Config needs an app reference
        host=host,
        port=port,
        workers=1,
        log_config=None,  # keep Arbor's logging (redaction, request ids)
        log_level=settings.effective_log_level,
        timeout_graceful_shutdown=int(max(1, round(settings.service.shutdown_timeout))),
        server_header=False,
        proxy_headers=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    stop: list[int] = []

    def note_signal(signum: int, _frame: FrameType | None) -> None:
        # Before uvicorn takes over: stop instead of starting. After it shut down it re-raises
        # the signal it handled; the drain is done by then, so the process exits 0.
        stop.append(signum)

    async def main() -> None:
        ctx = await open_context(settings)
        try:
            if not stop:
                config.app = create_app(ctx)
                await server.serve()
        finally:
            await ctx.aclose()

    previous = {s: signal.signal(s, note_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(main())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return server.started or bool(stop)
