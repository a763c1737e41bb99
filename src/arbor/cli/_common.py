"""Helpers shared by commands: settings loading, exit codes, error printing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, NoReturn

from pydantic import SecretStr
from rich.console import Console

from arbor.core.config import Settings, load_settings
from arbor.core.errors import ArborError, ConfigError
from arbor.core.logging import configure_logging

if TYPE_CHECKING:
    from arbor.llm.client import LLMClient

__all__ = [
    "EXIT_ERROR",
    "EXIT_USAGE",
    "ClientFactory",
    "default_client",
    "err_console",
    "fail",
    "settings_or_exit",
]

EXIT_USAGE = 2
EXIT_ERROR = 1

err_console = Console(stderr=True, highlight=False)


#: Builds a command's LLM client; a command keeps one as a module attribute (its seam), which
#: tests replace to serve scripted models.
ClientFactory = Callable[[Settings], AbstractAsyncContextManager["LLMClient"]]


def default_client(settings: Settings) -> AbstractAsyncContextManager[LLMClient]:
    """The configured client (:func:`arbor.llm.setup.open_client`), loaded on first use."""
    from arbor.llm.setup import open_client

    return open_client(settings)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print a one-line reason and exit; never a traceback."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    sys.exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    """Load and validate settings, configure logging, or exit 2 naming the bad variable."""
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    secrets = [s.get_secret_value() for s in _secret_values(settings)]
    configure_logging(settings.effective_log_level, settings.effective_log_format, secrets=secrets)
    return settings


def _secret_values(settings: Settings) -> list[SecretStr]:
    values = [settings.openai_api_key, settings.admin_key, settings.service.session_secret]
    values += [p.api_key for p in settings.providers.values()]
    return [v for v in values if v is not None]


def exit_code_for(exc: ArborError) -> int:
    return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_ERROR
