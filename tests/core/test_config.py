from __future__ import annotations

from pathlib import Path

import pytest

from arbor.core.config import Settings, load_settings
from arbor.core.errors import ConfigError


def test_defaults_are_valid_and_embedded() -> None:
    s = load_settings()
    assert s.default_model == "local:smollm2"
    assert s.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert s.effective_log_format == "console"
    assert (s.host, s.port) == ("127.0.0.1", 8000)


def test_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.variable == "ARBOR_LOG_LEVEL"
    assert "ARBOR_LOG_LEVEL" in str(err.value) and "loud" in str(err.value)


def test_nested_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_LLM__RETRY__MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="ARBOR_LLM__RETRY__MAX_ATTEMPTS"):
        load_settings()


def test_secret_values_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_PROVIDERS__X__BASE_URL", "ftp://nope")
    monkeypatch.setenv("ARBOR_PROVIDERS__X__API_KEY", "sk-verysecretkey123")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "sk-verysecretkey123" not in str(err.value)
    assert "ARBOR_PROVIDERS__X__BASE_URL" in str(err.value)


def test_sources_env_beats_dotenv_beats_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "arbor.toml").write_text(
        'default_model = "openai:from-toml"\nport = 9001\nlog_format = "json"\n'
        "[llm.retry]\nmax_attempts = 7\n"
    )
    monkeypatch.setenv("ARBOR_CONFIG", str(tmp_path / "arbor.toml"))
    (tmp_path / ".env").write_text("ARBOR_PORT=9002\nARBOR_DEFAULT_MODEL=openai:from-dotenv\n")
    monkeypatch.setenv("ARBOR_DEFAULT_MODEL", "openai:from-env")
    s = load_settings()
    assert s.default_model == "openai:from-env"
    assert s.port == 9002
    assert s.effective_log_format == "json"
    assert s.llm.retry.max_attempts == 7


def test_profile_prod_defaults_to_json_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_PROFILE", "prod")
    assert load_settings().effective_log_format == "json"
    monkeypatch.setenv("ARBOR_PROFILE", "staging")
    with pytest.raises(ConfigError, match="ARBOR_PROFILE"):
        load_settings()


def test_named_providers_and_masking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_PROVIDERS__OLLAMA__BASE_URL", "http://127.0.0.1:11434/v1/")
    monkeypatch.setenv("ARBOR_PROVIDERS__OLLAMA__API_KEY", "sk-ollama-secret")
    monkeypatch.setenv("ARBOR_OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("ARBOR_DATABASE_URL", "postgresql+asyncpg://arbor:pw-secret@db/arbor")
    s = load_settings()
    ollama = s.provider("ollama")
    assert ollama is not None and ollama.base_url == "http://127.0.0.1:11434/v1"
    openai = s.provider("openai")
    assert openai is not None and openai.api_key is not None
    assert s.provider("nope") is None
    shown = repr(s.masked())
    for secret in ("sk-ollama-secret", "sk-openai-secret", "pw-secret"):
        assert secret not in shown


def test_default_model_must_be_provider_colon_model() -> None:
    with pytest.raises(ConfigError, match="ARBOR_DEFAULT_MODEL"):
        load_settings(default_model="gpt-4o")


def test_two_settings_objects_are_independent() -> None:
    a, b = Settings(port=1234), Settings(port=4321)
    assert (a.port, b.port) == (1234, 4321)


def test_service_section_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings().service
    assert defaults.cors_origins == [] and defaults.max_body_bytes == 1_048_576
    assert not defaults.metrics_require_key and defaults.shutdown_timeout == 10.0
    assert defaults.key_cache_seconds == 0.0  # revocations apply to the next request
    monkeypatch.setenv("ARBOR_SERVICE__CORS_ORIGINS", '["https://ui.example/"]')
    monkeypatch.setenv("ARBOR_SERVICE__SESSION_SECRET", "a-very-private-session-secret")
    monkeypatch.setenv("ARBOR_SERVICE__MAX_BODY_BYTES", "4096")
    s = load_settings()
    assert s.service.cors_origins == ["https://ui.example"]
    assert s.service.max_body_bytes == 4096
    masked = s.masked()["service"]
    assert masked["session_secret"] == "**********"
    assert "a-very-private-session-secret" not in str(s.masked())


def test_service_section_refuses_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_SERVICE__CORS_ORIGINS", '["evil.example"]')
    with pytest.raises(ConfigError, match="ARBOR_SERVICE__CORS_ORIGINS"):
        load_settings()
    monkeypatch.delenv("ARBOR_SERVICE__CORS_ORIGINS")
    monkeypatch.setenv("ARBOR_SERVICE__MAX_BODY_BYTES", "10")
    with pytest.raises(ConfigError, match="ARBOR_SERVICE__MAX_BODY_BYTES"):
        load_settings()
