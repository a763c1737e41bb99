"""Settings: environment (``ARBOR_*``) > ``.env`` > ``arbor.toml`` > profile defaults.

One :class:`Settings` object is built at start-up and passed down; nothing reads the
environment later. Provider credentials come only from here, never from a request.
Nested values use ``__`` in the environment, e.g. ``ARBOR_LLM__RETRY__MAX_ATTEMPTS=5`` or
``ARBOR_PROVIDERS__OLLAMA__BASE_URL=http://127.0.0.1:11434/v1``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from arbor.core.errors import ConfigError

__all__ = [
    "BreakerSettings",
    "CacheSettings",
    "LLMSettings",
    "ModelLimits",
    "Price",
    "ProviderSettings",
    "RetrySettings",
    "ServiceSettings",
    "Settings",
    "TimeoutSettings",
    "load_settings",
]

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class _Section(BaseModel):
    model_config = {"extra": "forbid"}


class ProviderSettings(_Section):
    """An OpenAI-compatible endpoint, used as ``<name>:<model>``."""

    base_url: str
    api_key: SecretStr | None = None
    #: Extra headers sent on every request (e.g. OpenRouter's HTTP-Referer).
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")


class TimeoutSettings(_Section):
    connect: float = Field(5.0, gt=0)
    read: float = Field(60.0, gt=0)
    total: float = Field(120.0, gt=0)
    #: Longest gap allowed between two chunks of a stream.
    stream_idle: float = Field(30.0, gt=0)


class RetrySettings(_Section):
    max_attempts: int = Field(4, ge=1, le=20)
    base_delay: float = Field(0.5, ge=0)
    max_delay: float = Field(20.0, ge=0)
    #: Longest server-requested wait (Retry-After) we honour before giving up.
    retry_after_cap: float = Field(60.0, ge=0)
    #: What to do when the prompt is longer than the model's window: drop the oldest
    #: non-system turns ("drop_oldest"), keep only the system and last turn ("keep_last"),
    #: or give up ("error").
    on_context_too_long: Literal["drop_oldest", "keep_last", "error"] = "drop_oldest"


class BreakerSettings(_Section):
    failure_threshold: int = Field(5, ge=1)
    reset_timeout: float = Field(60.0, gt=0)
    half_open_successes: int = Field(3, ge=1)


class CacheSettings(_Section):
    enabled: bool = True
    memory_entries: int = Field(10_000, ge=0)
    disk: bool = True
    disk_max_entries: int = Field(200_000, ge=0)
    ttl_seconds: float = Field(7 * 24 * 3600, gt=0)
    #: Cache requests with temperature > 0 too (replaying one sample for every call).
    cache_sampling: bool = False


class ModelLimits(_Section):
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)


class Price(_Section):
    """USD per one million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)


class LLMSettings(_Section):
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    #: Rate limits by ``provider:model``, ``provider:*`` or ``*``; most specific wins.
    limits: dict[str, ModelLimits] = Field(default_factory=dict)
    #: Price overrides by ``provider:model`` or bare model name (USD per 1M tokens).
    prices: dict[str, Price] = Field(default_factory=dict)
    #: Models tried in order after the requested one fails, by requested model id.
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    #: Model ids a request may name, as ``fnmatch`` globs (``openai:*``, ``ollama:llama3*``);
    #: unset means any id of a configured provider. The default model is always allowed.
    allowed_models: list[str] | None = None
    #: Built models (and their per-model call state) kept at once; the least recently used
    #: beyond this are dropped and rebuilt on their next call, so arbitrary model ids in
    #: requests cannot grow memory without limit.
    max_models: int = Field(256, ge=1)
    #: Worker threads for the local GGUF provider (0 = half the cores, at least one).
    local_threads: int = Field(0, ge=0)
    local_context: int = Field(2048, ge=256)


class ServiceSettings(_Section):
    """The HTTP service (``arbor serve``): ``ARBOR_SERVICE__CORS_ORIGINS='["https://a.b"]'``."""

    #: Origins allowed to call the API from a browser; empty means cross-origin is denied.
    cors_origins: list[str] = Field(default_factory=list)
    #: Largest request body accepted, in bytes (413 beyond it).
    max_body_bytes: int = Field(1_048_576, ge=1024)
    #: Largest total size of a request's headers, in bytes (431 beyond it). The HTTP parser
    #: ``arbor serve`` uses passes headers of any size through.
    max_header_bytes: int = Field(32_768, ge=1024)
    #: Whether ``/metrics`` needs an API key (read scope).
    metrics_require_key: bool = False
    #: Signs dashboard session and CSRF tokens; a random one per process when unset
    #: (sessions then end on restart).
    session_secret: SecretStr | None = None
    #: Seconds ``arbor serve`` waits for in-flight requests and streams on SIGTERM.
    shutdown_timeout: float = Field(10.0, gt=0)
    #: How long a verified API key is trusted without asking the store again. 0 (default):
    #: every request asks (tens of microseconds on SQLite), so a revoke from any process
    #: applies to the next request. With a remote PostgreSQL a second or so saves a round
    #: trip per request; changes made through this process still apply at once.
    key_cache_seconds: float = Field(0.0, ge=0, le=60)
    #: How long a server's claim on a workflow run lasts unless renewed (it renews every
    #: third of it); a run whose server died is taken over by another one after this.
    run_lease_seconds: float = Field(30.0, gt=0)
    #: How often a server looks for runs nobody drives (their lease expired) to take over.
    run_sweep_seconds: float = Field(10.0, gt=0)
    #: How often a server looks for running batches it does not drive yet, and joins them
    #: (item leases let several servers work on one batch).
    batch_poll_seconds: float = Field(2.0, gt=0)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin {origin!r} must be http(s)://host[:port] or *")
        return [o.rstrip("/") for o in v]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ARBOR_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    profile: Literal["dev", "prod"] = "dev"
    home: Path = Path(".arbor")
    database_url: str | None = None
    redis_url: str | None = None
    milvus_uri: str | None = None
    default_model: str = "local:smollm2"

    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)

    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None

    log_level: LogLevel | None = None
    log_format: Literal["json", "console"] | None = None

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    admin_key: SecretStr | None = None

    #: OTLP endpoint for traces; unset means spans stay in process (nothing is sent).
    otlp_endpoint: str | None = None
    trace_console: bool = False

    llm: LLMSettings = Field(default_factory=LLMSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @field_validator("default_model")
    @classmethod
    def _model_id(cls, v: str) -> str:
        if ":" not in v or v.startswith(":") or v.endswith(":"):
            raise ValueError("must be a model id of the form provider:model")
        return v

    @field_validator("openai_base_url")
    @classmethod
    def _openai_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("ARBOR_CONFIG", "arbor.toml"))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=toml_path)
        return (init_settings, env_settings, dotenv_settings, toml, file_secret_settings)

    # ---- derived values (profile defaults) -------------------------------------------
    @property
    def effective_log_level(self) -> LogLevel:
        return self.log_level or "info"

    @property
    def effective_log_format(self) -> Literal["json", "console"]:
        return self.log_format or ("json" if self.profile == "prod" else "console")

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.home / 'arbor.db'}"

    def provider(self, name: str) -> ProviderSettings | None:
        """The endpoint for a provider name; ``openai`` comes from the top-level settings."""
        if name in self.providers:
            return self.providers[name]
        if name == "openai":
            return ProviderSettings(base_url=self.openai_base_url, api_key=self.openai_api_key)
        return None

    def masked(self) -> dict[str, Any]:
        """Effective settings as plain data with every secret masked, for display."""
        data = self.model_dump(mode="json")
        data["log_level"] = self.effective_log_level
        data["log_format"] = self.effective_log_format
        data["database_url"] = _mask_url(self.effective_database_url)
        if self.redis_url:
            data["redis_url"] = _mask_url(self.redis_url)
        return data


def _mask_url(url: str) -> str:
    """Hide the password in ``scheme://user:password@host``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation failures into a :class:`ConfigError` naming the
    offending variable (``ARBOR_LOG_LEVEL``), its value and what is allowed."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        variable = "ARBOR_" + "__".join(p.upper() for p in loc) if loc else "ARBOR_?"
        value = first.get("input")
        shown = "" if _looks_secret(loc) or isinstance(value, dict) else f"={value!r}"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        msg = f"invalid setting {variable}{shown}: {first['msg']}{more}"
        raise ConfigError(msg, variable=variable) from None


def _looks_secret(loc: list[str]) -> bool:
    return any(("key" in p.lower() or "password" in p.lower()) for p in loc)
