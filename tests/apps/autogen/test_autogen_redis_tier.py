"""The Redis tier against a real Redis: two caches with their own ``ARBOR_HOME`` share what
one generated (the second makes no model call and keeps a readable copy on its own disk), and
a Redis that is down degrades to the disk tier with a logged warning, never an ImportError.

Each test uses its own module name and description, so its keys (module, lineage and entry
keys all derive from them) never meet another test's under the shared ``arbor:autogen``
prefix; they are deleted afterwards."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from _autogen_helpers import TOKENS_V1, fenced, make_client, run_script
from redis import Redis

import arbor.autogen
from arbor.apps.autogen import AutogenImportError, cache_root
from arbor.apps.autogen.cache import _lineage
from arbor.core.config import Settings
from arbor.llm.types import ChatRequest

PREFIX = "arbor:autogen"


def _never(req: ChatRequest) -> str:
    raise AssertionError("the model was called")


def _caller(module: str, tag: str = "sess") -> str:
    return (
        f"from arbor.autogen.{module} import generate_token\n\n"
        f"def new_id() -> str:\n    return {tag!r} + '-' + generate_token(12)\n\n"
        "RESULT = new_id()\n"
    )


def _settings(home: Path, redis_url: str) -> Settings:
    return Settings(home=home, redis_url=redis_url)


@pytest.fixture
def names(redis_server_url: str) -> Iterator[tuple[str, str]]:
    """A module name and description of this test's own; their Redis keys go afterwards."""
    module = f"tok_{uuid.uuid4().hex[:10]}"
    description = f"Token helpers ({uuid.uuid4().hex})"
    yield module, description
    redis = Redis.from_url(redis_server_url)
    try:
        for key in redis.smembers(f"{PREFIX}:module:{module}"):
            redis.delete(f"{PREFIX}:entry:{key.decode() if isinstance(key, bytes) else key}")
        redis.delete(f"{PREFIX}:module:{module}")
        redis.delete(f"{PREFIX}:latest:{_lineage(module, description, 'test:autogen')}")
    finally:
        redis.close()


def _index(home: Path) -> dict[str, dict[str, object]]:
    data = json.loads((cache_root(Settings(home=home)) / "index.json").read_text("utf-8"))
    entries: dict[str, dict[str, object]] = data["entries"]
    return entries


@pytest.mark.redis
def test_a_second_cache_is_served_from_redis_and_keeps_a_readable_copy(
    tmp_path: Path, redis_server_url: str, names: tuple[str, str]
) -> None:
    module, description = names
    project = tmp_path / "project"
    project.mkdir()
    home_a, home_b, home_c = tmp_path / "home-a", tmp_path / "home-b", tmp_path / "home-c"

    client, model = make_client(lambda req: fenced(TOKENS_V1))
    redis_url = redis_server_url
    arbor.autogen.init(description, client=client, settings=_settings(home_a, redis_url))
    out = run_script(project, "app.py", _caller(module))
    assert out["RESULT"].startswith("sess-")
    assert len(model.calls) == 1
    entry = sys.modules[f"arbor.autogen.{module}"].__autogen_entry__
    redis = Redis.from_url(redis_url)
    try:
        shared = json.loads(redis.get(f"{PREFIX}:entry:{entry.key}") or b"{}")
        assert shared["code"] == TOKENS_V1.strip() + "\n" and shared["file"] is None
        assert (
            redis.get(f"{PREFIX}:latest:{_lineage(module, description, entry.model)}")
            == entry.key.encode()
        )
    finally:
        redis.close()

    # A second machine: its own home (empty disk), the same Redis, a model that must not run.
    assert not (home_b / "autogen").exists()
    client_b, model_b = make_client(_never)
    arbor.autogen.init(description, client=client_b, settings=_settings(home_b, redis_url))
    assert f"arbor.autogen.{module}" not in sys.modules
    out = run_script(project, "app.py", _caller(module))
    assert out["RESULT"].startswith("sess-")
    assert model_b.calls == []
    loaded = sys.modules[f"arbor.autogen.{module}"]
    # ... and it wrote the module to its own disk as a readable file, listed in its index
    index_b = _index(home_b)
    assert list(index_b) == [entry.key]
    copy = cache_root(Settings(home=home_b)) / str(index_b[entry.key]["file"])
    assert copy.read_text("utf-8") == TOKENS_V1.strip() + "\n"
    assert Path(loaded.__file__ or "").resolve() == copy.resolve()
    assert index_b[entry.key]["usage"] == entry.usage.model_dump()  # who paid, and how much

    # A third machine importing from other code (another context hash, so another key): the
    # module's latest version comes from Redis and is written to that disk too.
    client_c, model_c = make_client(_never)
    arbor.autogen.init(description, client=client_c, settings=_settings(home_c, redis_url))
    out = run_script(project, "other.py", _caller(module, tag="other"))
    assert out["RESULT"].startswith("other-") and model_c.calls == []
    index_c = _index(home_c)
    assert list(index_c) == [entry.key]
    file_c = cache_root(Settings(home=home_c)) / str(index_c[entry.key]["file"])
    assert file_c.read_text("utf-8") == TOKENS_V1.strip() + "\n"


def test_a_redis_outage_degrades_to_disk_with_a_warning(tmp_path: Path) -> None:
    module = f"tok_{uuid.uuid4().hex[:10]}"
    down = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once
    home = tmp_path / "home"
    client, model = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init("Token helpers", client=client, settings=_settings(home, down))
    with structlog.testing.capture_logs() as logs:
        out = run_script(tmp_path, "app.py", _caller(module))
    assert out["RESULT"].startswith("sess-") and len(model.calls) == 1
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert warnings and {e["event"] for e in warnings} <= {
        "autogen.redis_read_failed",
        "autogen.redis_write_failed",
    }
    assert all(e["error"] in {"ConnectionError", "ConnectionRefusedError"} for e in warnings)
    assert list(_index(home)) == [sys.modules[f"arbor.autogen.{module}"].__autogen_entry__.key]

    # Still down: a new runtime is served from the disk tier, no model call, no ImportError.
    client_2, model_2 = make_client(_never)
    arbor.autogen.init("Token helpers", client=client_2, settings=_settings(home, down))
    with structlog.testing.capture_logs():
        out = run_script(tmp_path, "app.py", _caller(module))
    assert out["RESULT"].startswith("sess-") and model_2.calls == []

    # A module nobody generated before: the model writes it; Redis being down changes nothing.
    client_3, model_3 = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init("Other helpers", client=client_3, settings=_settings(home, down))
    try:
        with structlog.testing.capture_logs():
            run_script(tmp_path, "app.py", _caller(module))
    except AutogenImportError as exc:  # pragma: no cover - the failure this test guards
        pytest.fail(f"a Redis outage failed the import: {exc}")
    assert len(model_3.calls) == 1


@pytest.mark.redis
def test_a_module_that_raised_leaves_redis_too(
    tmp_path: Path, redis_server_url: str, names: tuple[str, str]
) -> None:
    module, description = names
    project = tmp_path / "project"
    project.mkdir()
    broken = "LIMIT = int('ten')\n" + TOKENS_V1
    client, model = make_client(lambda req: fenced(broken))
    settings = _settings(tmp_path / "home", redis_server_url)
    arbor.autogen.init(description, client=client, settings=settings)
    with pytest.raises(AutogenImportError, match="dropped from the cache"):
        run_script(project, "app.py", _caller(module))
    redis = Redis.from_url(redis_server_url)
    try:
        assert redis.smembers(f"{PREFIX}:module:{module}") == set()
        assert redis.get(f"{PREFIX}:latest:{_lineage(module, description, 'test:autogen')}") is None
    finally:
        redis.close()
    assert _index(tmp_path / "home") == {}
    assert len(model.calls) == 1
