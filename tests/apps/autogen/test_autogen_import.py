"""``from arbor.autogen.<module> import name`` with a FunctionModel: one model call then the
cache, the caller's source in the prompt, modules that grow, refused replies retried."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _autogen_helpers import (
    MODEL,
    TOKENS_V1,
    TOKENS_V2,
    fenced,
    make_client,
    prompt_text,
    run_script,
)

import arbor.autogen
from arbor.apps.autogen import AutogenImportError, cache_root
from arbor.core.config import Settings
from arbor.llm.types import ChatRequest

CALLER = """
from arbor.autogen.tokens import generate_token

def new_session_id() -> str:
    return "sess-" + generate_token(24)

RESULT = new_session_id()
"""


def test_first_import_calls_the_model_once_then_the_cache(tmp_path: Path) -> None:
    client, model = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init("Cryptographic utility library", client=client)
    out = run_script(tmp_path, "app.py", CALLER)
    assert out["RESULT"].startswith("sess-") and len(out["RESULT"]) > 20
    assert len(model.calls) == 1
    mod = sys.modules["arbor.autogen.tokens"]
    assert mod.__file__ and Path(mod.__file__).read_text() == TOKENS_V1.strip() + "\n"

    # the same process: already imported, then (module dropped) the memory tier
    run_script(tmp_path, "app.py", CALLER)
    del sys.modules["arbor.autogen.tokens"]
    run_script(tmp_path, "app.py", CALLER)
    assert len(model.calls) == 1

    # a new runtime (a fresh memory tier, as in a new process) reads the disk tier
    client2, model2 = make_client(lambda req: fenced("raise SystemExit('not called')"))
    arbor.autogen.init("Cryptographic utility library", client=client2)
    assert "arbor.autogen.tokens" not in sys.modules  # init replaced the old session
    out = run_script(tmp_path, "app.py", CALLER)
    assert out["RESULT"].startswith("sess-")
    assert model2.calls == []


def test_a_fresh_process_hits_the_disk_cache(tmp_path: Path) -> None:
    import subprocess

    client, model = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init("Cryptographic utility library", client=client)
    run_script(tmp_path, "app.py", CALLER)
    assert len(model.calls) == 1
    script = tmp_path / "fresh.py"
    script.write_text(
        "import runpy, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from _autogen_helpers import make_client\n"
        "import arbor.autogen\n"
        "def boom(req):\n"
        "    raise AssertionError('the model was called')\n"
        "client, model = make_client(boom)\n"
        "arbor.autogen.init('Cryptographic utility library', client=client)\n"
        "out = runpy.run_path(sys.argv[1])\n"
        "print(out['RESULT'][:5], len(model.calls))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "app.py"), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["sess-", "0"]


def test_the_prompt_carries_description_caller_source_and_call_sites(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (tmp_path / "helpers.py").write_text(
        "import hashlib\n\ndef generate_salt(n: int) -> bytes:\n"
        "    '''Random salt.'''\n    return b'x' * n\n"
    )
    client, model = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init("Cryptographic utility library", client=client)
    run_script(tmp_path, "app.py", CALLER)
    text = prompt_text(model.calls[0])
    assert "Cryptographic utility library" in text
    assert "def new_session_id() -> str:" in text  # the caller's source
    assert 'return "sess-" + generate_token(24)' in text  # the call site
    assert "Where the requested names are used" in text
    assert "generate_salt" in text and "helpers.py" in text  # codebase context (similar)
    assert "Modules the project imports: " in text and "hashlib" in text


def test_a_module_gains_a_second_function_without_losing_the_first(tmp_path: Path) -> None:
    replies = iter([fenced(TOKENS_V1), fenced(TOKENS_V2)])
    client, model = make_client(lambda req: next(replies))
    arbor.autogen.init("Cryptographic utility library", client=client)
    run_script(tmp_path, "app.py", CALLER)
    out = run_script(
        tmp_path,
        "more.py",
        """
        from arbor.autogen.tokens import token_bytes
        from arbor.autogen.tokens import generate_token
        SIZE = len(token_bytes(8))
        TOKEN = generate_token(4)
        """,
    )
    assert out["SIZE"] == 8 and out["TOKEN"]
    assert len(model.calls) == 2
    second = prompt_text(model.calls[1])
    assert "def generate_token(length: int = 16) -> str:" in second  # existing code
    assert "Names to define: generate_token, token_bytes" in second
    mod = sys.modules["arbor.autogen.tokens"]
    assert callable(mod.generate_token) and callable(mod.token_bytes)

    # a fresh memory tier: both versions come from disk, no call
    client2, model2 = make_client(lambda req: "never")
    arbor.autogen.init("Cryptographic utility library", client=client2)
    out = run_script(
        tmp_path,
        "more2.py",
        "from arbor.autogen.tokens import token_bytes\n"
        "from arbor.autogen.tokens import generate_token\nX = token_bytes(2)\n",
    )
    assert out["X"] and model2.calls == []


def _three_bad_then(good: str | None, bad: list[str]) -> tuple[object, object]:
    replies = iter([*bad, *([good] if good else [])])
    return make_client(lambda req: next(replies))


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (fenced("def generate_token(:\n    pass"), "syntax error at line 1"),
        (fenced("def make_token() -> str:\n    return 'x'"), "does not define generate_token"),
        (
            fenced(
                "import subprocess\n\ndef generate_token() -> str:\n"
                "    return subprocess.check_output(['id']).decode()"
            ),
            "import subprocess is not allowed (runs other programs)",
        ),
        (
            fenced(
                "import os\n\ndef generate_token() -> str:\n    os.system('id')\n    return 'x'"
            ),
            "call to os.system() is not allowed (runs a shell command)",
        ),
    ],
)
def test_a_refused_reply_is_retried_with_its_error_then_fails_clearly(
    tmp_path: Path, bad: str, reason: str
) -> None:
    client, model = make_client(lambda req: bad)
    arbor.autogen.init("Cryptographic utility library", client=client, retries=2)
    with pytest.raises(ImportError) as err:
        run_script(tmp_path, "app.py", CALLER)
    assert isinstance(err.value, AutogenImportError)
    message = str(err.value)
    assert "'tokens'" in message and "generate_token" in message and reason in message
    assert "after 3 attempt(s)" in message
    assert len(model.calls) == 3
    for later in model.calls[1:]:
        assert f"That module was refused: {reason}" in "".join(
            m.content or "" for m in later.messages[-1:]
        ) or reason in (later.messages[-1].content or "")
    assert "arbor.autogen.tokens" not in sys.modules
    settings = Settings()
    assert not (cache_root(settings) / "index.json").exists()


def test_a_retry_can_succeed(tmp_path: Path) -> None:
    replies = iter([fenced("def nope(:"), fenced(TOKENS_V1)])
    client, model = make_client(lambda req: next(replies))
    arbor.autogen.init("Cryptographic utility library", client=client)
    out = run_script(tmp_path, "app.py", CALLER)
    assert out["RESULT"].startswith("sess-")
    assert len(model.calls) == 2
    last = model.calls[1].messages
    assert last[-2].role == "assistant" and "def nope(:" in (last[-2].content or "")
    assert "syntax error" in (last[-1].content or "")


def test_allow_imports_lifts_the_policy(tmp_path: Path) -> None:
    code = "import socket\n\ndef generate_token(n: int) -> str:\n    return socket.gethostname()\n"
    client, model = make_client(lambda req: fenced(code))
    arbor.autogen.init("Host utilities", client=client, allow_imports=["socket"])
    out = run_script(tmp_path, "app.py", CALLER)
    assert out["RESULT"].startswith("sess-") and len(model.calls) == 1


def test_changing_the_description_invalidates_the_cache(tmp_path: Path) -> None:
    client, model = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init("Cryptographic utility library", client=client)
    run_script(tmp_path, "app.py", CALLER)
    arbor.autogen.init("Cryptographic utility library", client=client)
    run_script(tmp_path, "app.py", CALLER)
    assert len(model.calls) == 1
    arbor.autogen.init("Session token helpers for a web app", client=client)
    run_script(tmp_path, "app.py", CALLER)
    assert len(model.calls) == 2
    assert "Session token helpers for a web app" in prompt_text(model.calls[1])
    assert "The module's current code" not in prompt_text(model.calls[1])


def test_import_forms_that_cannot_be_generated_say_why(tmp_path: Path) -> None:
    client, model = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init("Cryptographic utility library", client=client)
    with pytest.raises(ImportError, match=r"import \*"):
        run_script(tmp_path, "star.py", "from arbor.autogen.tokens import *\n")
    with pytest.raises(ImportError, match="nested"):
        run_script(tmp_path, "deep.py", "from arbor.autogen.tokens.sub import x\n")
    assert model.calls == []


def test_import_module_attribute_form(tmp_path: Path) -> None:
    client, model = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init("Cryptographic utility library", client=client)
    out = run_script(
        tmp_path,
        "attr.py",
        "import arbor.autogen.tokens as tok\nVALUE = tok.generate_token(3)\n",
    )
    assert out["VALUE"] and len(model.calls) == 1
    assert "Names to define: generate_token" in prompt_text(model.calls[0])


def test_without_init_nothing_is_generated(tmp_path: Path) -> None:
    with pytest.raises(ModuleNotFoundError):
        run_script(tmp_path, "app.py", CALLER)


def test_usage_per_module_is_recorded(tmp_path: Path) -> None:
    client, model = make_client(lambda req: fenced(TOKENS_V1))
    arbor.autogen.init("Cryptographic utility library", client=client)
    run_script(tmp_path, "app.py", CALLER)
    entry = sys.modules["arbor.autogen.tokens"].__autogen_entry__
    assert entry.usage.calls == 1 and entry.usage.input_tokens > 0
    assert entry.usage.output_tokens > 0 and entry.model == MODEL
    assert model.calls[0].context.agent_id == "autogen:tokens"


def test_request_is_not_served_from_the_llm_response_cache(tmp_path: Path) -> None:
    seen: list[ChatRequest] = []

    def reply(req: ChatRequest) -> str:
        seen.append(req)
        return fenced(TOKENS_V1)

    client, _ = make_client(reply)
    arbor.autogen.init("Cryptographic utility library", client=client)
    run_script(tmp_path, "app.py", CALLER)
    assert seen[0].cache is False
