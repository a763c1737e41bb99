"""``arbor autogen prefetch|list|show|clear`` in process with a FunctionModel: prefetch
generates a file's modules concurrently and a later real import of that file makes no model
call; list/show/clear round trip over ARBOR_HOME/autogen; bad input exits 2, a module that
never validates exits 1."""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from _autogen_helpers import MODEL, TOKENS_V2, fenced, make_client, prompt_text
from typer.testing import CliRunner, Result

import arbor.autogen
from arbor.apps.autogen import cache_root
from arbor.apps.autogen.cache import _lineage
from arbor.cli import autogen as autogen_cli
from arbor.cli.main import app
from arbor.core.config import Settings
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest
from arbor.testing import FunctionModel

TEXT = '''
def slugify(title: str) -> str:
    """Lower-case words joined by dashes."""
    return "-".join(title.lower().split())
'''

APP = """
from arbor.autogen import init

init("Cryptographic utility library")

from arbor.autogen.tokens import generate_token
from arbor.autogen.text import slugify
import arbor.autogen.tokens as tok


def session_id() -> str:
    return "sess-" + generate_token(24)


RESULT = session_id()
SLUG = slugify("Hello World")
SIZE = len(tok.token_bytes(8))
"""


def _serve(monkeypatch: pytest.MonkeyPatch, reply: Callable[[ChatRequest], Any]) -> FunctionModel:
    """Point ``prefetch`` at a FunctionModel through the CLI's client factory."""
    monkeypatch.setenv("ARBOR_DEFAULT_MODEL", MODEL)
    model = FunctionModel(reply, name="autogen")

    @asynccontextmanager
    async def client(settings: Settings) -> AsyncIterator[LLMClient]:
        llm = settings.llm.model_copy(
            update={"cache": settings.llm.cache.model_copy(update={"enabled": False})}
        )
        c = LLMClient(settings.model_copy(update={"llm": llm}), models={MODEL: model})
        try:
            yield c
        finally:
            await c.aclose()

    monkeypatch.setattr(autogen_cli, "open_autogen_client", client)
    return model


def _write(folder: Path, name: str, code: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return path


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, ["autogen", *args])


def _module_of(request: ChatRequest) -> str:
    return prompt_text(request).split("Module: arbor.autogen.", 1)[1].split()[0]


def _overlapping_replies() -> tuple[Callable[[ChatRequest], Any], dict[str, int]]:
    """Replies that wait (up to 5 s) until two calls are in flight, recording the peak: a
    sequential prefetch peaks at 1."""
    seen = {"in_flight": 0, "peak": 0}
    both: list[asyncio.Event] = []

    async def reply(request: ChatRequest) -> str:
        if not both:
            both.append(asyncio.Event())
        seen["in_flight"] += 1
        seen["peak"] = max(seen["peak"], seen["in_flight"])
        if seen["in_flight"] >= 2:
            both[0].set()
        try:
            await asyncio.wait_for(both[0].wait(), timeout=5)
        except TimeoutError:
            pass
        seen["in_flight"] -= 1
        return fenced(TEXT if _module_of(request) == "text" else TOKENS_V2)

    return reply, seen


def test_prefetch_generates_concurrently_then_the_real_import_calls_no_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reply, seen = _overlapping_replies()
    model = _serve(monkeypatch, reply)
    app_py = _write(tmp_path, "app.py", APP)

    result = _cli("prefetch", str(app_py))
    assert result.exit_code == 0, result.output
    assert "2 generated, 0 cached, 0 failed" in result.output
    assert seen["peak"] == 2  # both modules were in flight at once
    assert sorted(_module_of(r) for r in model.calls) == ["text", "tokens"]
    tokens_prompt = next(prompt_text(r) for r in model.calls if _module_of(r) == "tokens")
    # one module for both statements, the union of their names, the file as the caller
    assert "Names to define: generate_token, token_bytes" in tokens_prompt
    assert "Cryptographic utility library" in tokens_prompt
    assert 'return "sess-" + generate_token(24)' in tokens_prompt
    assert "SIZE = len(tok.token_bytes(8))" in tokens_prompt
    assert "tokens:" in result.output and "cost: $" in result.output

    # again: everything cached, no call
    again = _cli("prefetch", str(app_py))
    assert again.exit_code == 0, again.output
    assert "0 generated, 2 cached, 0 failed" in again.output
    assert len(model.calls) == 2

    # the file itself, run for real (its own init), serves every import from the cache
    def boom(request: ChatRequest) -> str:
        raise AssertionError("the model was called")

    client, fresh = make_client(boom)
    real_init = arbor.autogen.init
    monkeypatch.setattr(
        arbor.autogen,
        "init",
        lambda description, **kw: real_init(description, client=client, **kw),
    )
    out = runpy.run_path(str(app_py))
    assert out["RESULT"].startswith("sess-") and out["SLUG"] == "hello-world"
    assert out["SIZE"] == 8
    assert fresh.calls == []


def test_list_show_clear_round_trip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reply, _ = _overlapping_replies()
    _serve(monkeypatch, reply)
    assert _cli("prefetch", str(_write(tmp_path, "app.py", APP))).exit_code == 0
    root = cache_root(Settings())

    listed = _cli("list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert sorted(r["module"] for r in rows) == ["text", "tokens"]
    tokens = next(r for r in rows if r["module"] == "tokens")
    assert tokens["names"] == ["generate_token", "token_bytes"]
    assert tokens["description"] == "Cryptographic utility library" and tokens["model"] == MODEL
    assert tokens["status"] == "cached" and tokens["id"] and tokens["created_at"]
    assert tokens["usage"]["calls"] == 1 and tokens["usage"]["output_tokens"] > 0
    assert Path(tokens["file"]).is_file() and Path(tokens["file"]).parent.parent == root

    table = _cli("list")
    assert table.exit_code == 0 and "tokens" in table.output and "slugify" in table.output

    shown = _cli("show", "tokens")
    assert shown.exit_code == 0, shown.output
    assert "# arbor.autogen.tokens: generate_token, token_bytes" in shown.output
    assert shown.output.endswith(TOKENS_V2.strip() + "\n")
    compile(shown.output, "shown.py", "exec")  # the header is comments: still Python

    assert _cli("clear", "tokens").exit_code == 2  # not a terminal and no --yes: asks
    cleared = _cli("clear", "tokens", "--yes")
    assert cleared.exit_code == 0, cleared.output
    assert "removed 1 entry (1 file(s))" in cleared.output
    assert not Path(tokens["file"]).exists() and not (root / "tokens").exists()
    missing = _cli("show", "tokens")
    assert missing.exit_code == 2 and "'tokens'" in missing.output
    assert [r["module"] for r in json.loads(_cli("list", "--json").output)] == ["text"]
    assert _cli("clear", "tokens", "--yes").exit_code == 2  # nothing left to clear

    everything = _cli("clear", "--yes")
    assert everything.exit_code == 0 and "removed 1 entry" in everything.output
    assert json.loads(_cli("list", "--json").output) == []
    assert not (root / "text").exists()
    assert "no generated modules" in _cli("list").output


def test_a_module_that_never_validates_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = _serve(monkeypatch, lambda req: fenced("def something_else() -> None:\n    pass"))
    app_py = _write(
        tmp_path,
        "app.py",
        """
        import arbor.autogen
        arbor.autogen.init("Cryptographic utility library", retries=1)
        from arbor.autogen.tokens import generate_token
        """,
    )
    result = _cli("prefetch", str(app_py))
    assert result.exit_code == 1, result.output
    assert "0 generated, 0 cached, 1 failed" in result.output
    assert "tokens: failed: the module does not define generate_token" in result.output
    assert len(model.calls) == 2  # retries=1 was read from the file's init
    spent = result.output.split("1 failed; tokens: ", 1)[1].split()
    assert int(spent[0]) > 0 and int(spent[2]) > 0  # the failed attempts' tokens are counted
    assert json.loads(_cli("list", "--json").output) == []


def test_description_option_and_import_forms(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = _serve(monkeypatch, lambda req: fenced(TOKENS_V2))
    app_py = _write(
        tmp_path,
        "lib.py",
        """
        import arbor.autogen.tokens


        def make() -> bytes:
            return arbor.autogen.tokens.token_bytes(4)
        """,
    )
    result = _cli("prefetch", str(app_py), "--description", "Token helpers", "-c", "1")
    assert result.exit_code == 0, result.output
    text = prompt_text(model.calls[0])
    assert "Library description: Token helpers" in text
    assert "Names to define: token_bytes" in text


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [
        (None, None, "does not exist"),
        ("broken.py", "from arbor.autogen.tokens import (\n", "does not parse: line 1"),
        ("plain.py", "import os\nprint(os.sep)\n", "has no arbor.autogen imports"),
        ("nodesc.py", "from arbor.autogen.tokens import generate_token\n", "pass --description"),
        (
            "dyn.py",
            "from arbor.autogen import init\nD = 'x'\ninit(D)\n"
            "from arbor.autogen.tokens import generate_token\n",
            "has no literal description",
        ),
        (
            "star.py",
            "from arbor.autogen import init\ninit('x')\nfrom arbor.autogen.tokens import *\n",
            "import *",
        ),
        (
            "face.py",
            "from arbor.autogen import init, tokens\ninit('x')\n",
            "use 'from arbor.autogen.tokens import NAME'",
        ),
        (
            "nocache.py",
            "from arbor.autogen import init\ninit('x', cache=False)\n"
            "from arbor.autogen.tokens import generate_token\n",
            "cache=False",
        ),
    ],
)
def test_bad_input_exits_2_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str | None,
    code: str | None,
    reason: str,
) -> None:
    model = _serve(monkeypatch, lambda req: fenced(TOKENS_V2))
    path = tmp_path / (name or "missing.py")
    if code is not None:
        path.write_text(code, encoding="utf-8")
    result = _cli("prefetch", str(path))
    assert result.exit_code == 2, result.output
    assert reason in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert model.calls == []
    assert not (cache_root(Settings()) / "index.json").exists()


def test_bad_options_and_unknown_modules_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _serve(monkeypatch, lambda req: fenced(TOKENS_V2))
    app_py = _write(tmp_path, "app.py", APP)
    assert _cli("prefetch", str(app_py), "--concurrency", "0").exit_code == 2
    assert _cli("prefetch", str(app_py), "--model", "nocolon").exit_code == 2
    unknown = _cli("show", "nothing_here")
    assert unknown.exit_code == 2 and "'nothing_here'" in unknown.output
    assert _cli("show", "../etc").exit_code == 2
    assert _cli("clear", "nothing_here", "--yes").exit_code == 2


def test_prefetch_fills_redis_and_clear_empties_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_server_url: str
) -> None:
    """With ARBOR_REDIS_URL the shared tier gets the module too, and ``clear`` drops it there
    (a module name of its own: other tests share the server's ``arbor:autogen`` prefix)."""
    from redis import Redis

    module = f"m{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("ARBOR_REDIS_URL", redis_server_url)
    _serve(monkeypatch, lambda req: fenced(TOKENS_V2))
    app_py = _write(
        tmp_path,
        "app.py",
        f"from arbor.autogen import init\ninit('Shared tokens')\n"
        f"from arbor.autogen.{module} import generate_token\n",
    )
    result = _cli("prefetch", str(app_py))
    assert result.exit_code == 0, result.output
    redis = Redis.from_url(redis_server_url)
    try:
        keys = redis.smembers(f"arbor:autogen:module:{module}")
        assert len(keys) == 1
        cleared = _cli("clear", module, "--yes")
        assert cleared.exit_code == 0, cleared.output
        assert "removed 1 entry (1 file(s))" in cleared.output
        assert "and 1 from Redis" in cleared.output
        raw = next(iter(keys))
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        assert not redis.exists(f"arbor:autogen:entry:{key}")
        assert not redis.exists(f"arbor:autogen:module:{module}")
    finally:
        lineage = _lineage(module, "Shared tokens", MODEL)  # RedisTier.clear(module) keeps it
        redis.delete(f"arbor:autogen:module:{module}", f"arbor:autogen:latest:{lineage}")
        redis.close()


def test_after_prefetch_the_file_runs_as_is_in_a_fresh_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No test seam on the import side: the file's own ``init`` builds the configured client,
    whose default model (``test:autogen``) no provider serves, so any model call would fail
    the import; the script runs because every module comes from the disk cache."""
    reply, _ = _overlapping_replies()
    _serve(monkeypatch, reply)
    app_py = _write(tmp_path, "app.py", APP + "print(RESULT[:5], SLUG, SIZE)\n")
    assert _cli("prefetch", str(app_py)).exit_code == 0
    env = {k: v for k, v in os.environ.items() if k.startswith(("ARBOR_", "PATH", "HOME"))}
    proc = subprocess.run(
        [sys.executable, str(app_py)], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["sess-", "hello-world", "8"]

    # and the control: a description the cache has never seen needs the (absent) model
    app_py.write_text(APP.replace("Cryptographic utility library", "Something else"))
    proc = subprocess.run(
        [sys.executable, str(app_py)], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode != 0 and "arbor.autogen could not generate module" in proc.stderr


def test_the_init_call_is_read_in_every_import_form() -> None:
    import ast

    from arbor.apps.autogen.prefetch import find_init

    forms = {
        "from arbor.autogen import init as go\ngo('A', model='openai:x')\n": "A",
        "import arbor.autogen\narbor.autogen.init(description='B')\n": "B",
        "import arbor.autogen as ag\nag.init('C')\n": "C",
        "from arbor import autogen\nautogen.init('D')\n": "D",
    }
    for code, description in forms.items():
        found = find_init(ast.parse(code))
        assert found is not None and found.description == description, code
    assert find_init(ast.parse("def init(x): ...\ninit('not ours')\n")) is None

    found = find_init(
        ast.parse(
            "from arbor.autogen import init\nN = 3\n"
            "init('E', model='openai:m', allow_imports=['socket'], max_tokens=512,\n"
            "     retries=N, smoke=None, explain_exceptions=True)\n"
        )
    )
    assert found is not None and found.line == 3
    assert found.options == {
        "model": "openai:m",
        "allow_imports": ("socket",),
        "max_tokens": 512,
    }
    assert found.unread == ["retries"]  # an expression: prefetch says it uses the default
