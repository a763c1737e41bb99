"""Two ways a reply passes a name check yet cannot load, both seen with SmolLM2: a module that
echoes the caller's ``from arbor.autogen.<module> import name`` (the import "defines" the name,
and executing it imports the half-loaded module itself) is refused by the import policy and
retried; a module that raises when executed in the importing process fails as a clear
:class:`AutogenImportError`, not as whatever it raised."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _autogen_helpers import fenced, make_client, prompt_text, run_script

import arbor.autogen
from arbor.apps.autogen import AutogenImportError, cache_root

CALLER = """
from arbor.autogen.textutil import reverse_words

RESULT = reverse_words("one two three")
"""

GOOD = '''
def reverse_words(text: str) -> str:
    """The words of text in reverse order."""
    return " ".join(reversed(text.split()))
'''


@pytest.mark.parametrize(
    "echo",
    [
        "from arbor.autogen.textutil import reverse_words\n",
        "import arbor.autogen.textutil\nreverse_words = arbor.autogen.textutil.reverse_words\n",
        "from arbor.autogen import textutil\nreverse_words = textutil.reverse_words\n",
    ],
)
def test_a_module_importing_itself_is_refused_and_retried(tmp_path: Path, echo: str) -> None:
    replies = iter([fenced(echo), fenced(GOOD)])
    client, model = make_client(lambda req: next(replies))
    arbor.autogen.init("Small text utilities", client=client)
    out = run_script(tmp_path, "app.py", CALLER)
    assert out["RESULT"] == "three two one"
    assert len(model.calls) == 2
    retry = prompt_text(model.calls[1])
    assert "That module was refused: the import policy refused it" in retry
    assert "arbor.autogen" in retry and "define the names here instead" in retry


def test_a_module_importing_itself_fails_clearly_after_the_retries(tmp_path: Path) -> None:
    client, model = make_client(lambda req: fenced(CALLER))  # the caller's code, echoed
    arbor.autogen.init("Small text utilities", client=client, retries=1)
    with pytest.raises(AutogenImportError, match=r"import from arbor\.autogen\.textutil"):
        run_script(tmp_path, "app.py", CALLER)
    assert len(model.calls) == 2
    assert "arbor.autogen.textutil" not in sys.modules


def test_a_module_that_raises_when_executed_is_a_clear_import_error(tmp_path: Path) -> None:
    code = "LIMIT = int('ten')\n" + GOOD
    client, model = make_client(lambda req: fenced(code))
    arbor.autogen.init("Small text utilities", client=client)
    with pytest.raises(ImportError) as err:
        run_script(tmp_path, "app.py", CALLER)
    assert isinstance(err.value, AutogenImportError)
    message = str(err.value)
    assert "'textutil' defining reverse_words" in message
    assert "the generated module raised ValueError when executed" in message
    assert "invalid literal for int()" in message and "smoke=True" in message
    assert isinstance(err.value.__cause__, ValueError)
    assert "arbor.autogen.textutil" not in sys.modules
    assert len(model.calls) == 1


def test_a_module_that_raised_is_not_kept_and_the_next_import_asks_again(
    tmp_path: Path,
) -> None:
    replies = iter([fenced("LIMIT = int('ten')\n" + GOOD), fenced(GOOD)])
    client, model = make_client(lambda req: next(replies))
    arbor.autogen.init("Small text utilities", client=client)
    with pytest.raises(AutogenImportError, match="dropped from the cache"):
        run_script(tmp_path, "app.py", CALLER)
    root = cache_root(client.settings)
    # the failing code's file is gone too
    assert root.is_dir() and not list(root.glob("textutil/*.py"))
    out = run_script(tmp_path, "app.py", CALLER)
    assert out["RESULT"] == "three two one"
    assert len(model.calls) == 2
