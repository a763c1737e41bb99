"""Files out of a model's reply, and the per-role rules for where a role may write.

Structured output (a typed ``files: [{path, content}]`` list) is the normal path. Weak models
often ignore the JSON schema and answer in Markdown instead; for them a reply made of fenced
blocks whose info string is the file's path is accepted as a fallback::

    ```src/calc/__init__.py
    def add(a: int, b: int) -> int:
        return a + b
    ```

A fence whose info string is a bare language name (```python) is not a file: only info
strings that look like a relative path (a ``/`` or a ``.`` in them, no spaces) count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import ValidationError

from arbor.agents.roles.outputs import FileSpec

__all__ = ["allowed_for", "fenced_files", "render_files"]

_FENCE = re.compile(
    r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`]+)[ \t]*\n(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_LANGUAGES = frozenset(
    {
        "python",
        "py",
        "toml",
        "yaml",
        "yml",
        "makefile",
        "dockerfile",
        "markdown",
        "md",
        "json",
        "text",
        "txt",
        "sh",
        "bash",
        "ini",
        "cfg",
    }
)


def _looks_like_path(info: str) -> bool:
    if info.lower() in _LANGUAGES:
        return info in ("Makefile", "Dockerfile")
    return "/" in info or "." in info or info in ("Makefile", "Dockerfile")


def fenced_files(text: str) -> list[FileSpec]:
    """The files of a fenced-block reply (see the module docstring); invalid paths (absolute,
    ``..``) are dropped, a repeated path keeps its last block."""
    found: dict[str, FileSpec] = {}
    for match in _FENCE.finditer(text):
        info = match.group("info")
        if info.startswith("path="):
            info = info[5:]
        if not _looks_like_path(info):
            continue
        try:
            spec = FileSpec(path=info, content=match.group("body"))
        except ValidationError:
            continue
        found[spec.path] = spec
    return list(found.values())


_QA = ("tests/",)
_DEVOPS_FILES = frozenset(
    {
        "Makefile",
        "Dockerfile",
        ".dockerignore",
        ".gitlab-ci.yml",
        "Jenkinsfile",
        "docker-compose.yml",
        "compose.yaml",
    }
)
_DEVOPS_DIRS = (".github/", "ci/", ".ci/")


def allowed_for(role: str, path: str) -> bool:
    """Whether ``role`` may write ``path``: QA writes tests, DevOps build/CI files, the writer
    Markdown; the developer writes the rest (never another role's kinds of file)."""
    name = path.rsplit("/", 1)[-1]
    is_test = path.startswith(_QA) or name.startswith("test_") or name == "conftest.py"
    is_devops = path in _DEVOPS_FILES or path.startswith(_DEVOPS_DIRS)
    is_doc = path.endswith(".md") or path.startswith("docs/")
    if role == "qa":
        return is_test and path.endswith(".py")
    if role == "devops":
        return is_devops
    if role == "writer":
        return is_doc
    return not (is_test or is_devops or is_doc)


def render_files(files: Iterable[FileSpec], *, limit: int = 40_000) -> str:
    """Files as the prompts show them (each fenced under its path), cut at ``limit`` chars."""
    parts: list[str] = []
    used = 0
    for spec in files:
        block = f"```{spec.path}\n{spec.content.rstrip()}\n```\n"
        if used + len(block) > limit:
            parts.append(f"(further files left out: the listing is capped at {limit} chars)\n")
            break
        parts.append(block)
        used += len(block)
    return "".join(parts) or "(no files yet)"
