"""The compile validator: Mono's ``mcs`` over Arbor's Renode API stubs plus the model(s).

Many models compile in one ``mcs`` run (one process start instead of one per peripheral);
diagnostics are attributed back to each model by file name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from arbor.apps.renode.regmap import RenodeError

__all__ = ["CompileResult", "McsNotFoundError", "compile_models", "find_mcs", "stubs_source"]

_DIAGNOSTIC = re.compile(r"^(?P<file>[^(\s]+)\((?P<line>\d+),(?P<col>\d+)\): error (?P<msg>.*)$")
_UNPLACED_ERROR = re.compile(r"\berror CS\d+|^error\b", re.IGNORECASE)
_TIMEOUT_SECONDS = 300


class McsNotFoundError(RenodeError):
    """Debian's ``mono-mcs`` is not installed, so nothing can be compiled."""


@dataclass(frozen=True)
class CompileResult:
    """Errors (``line:col: CSxxxx: message``) mcs reported for one model."""

    errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def find_mcs() -> str | None:
    return shutil.which("mcs")


def stubs_source() -> str:
    """The C# stubs of the Renode API shipped with the package."""
    return files("arbor.apps.renode").joinpath("stubs/RenodeApi.cs").read_text(encoding="utf-8")


def compile_models(sources: dict[str, str]) -> dict[str, CompileResult]:
    """Compile ``{file name: C# source}`` together with the stubs; a result per file.

    Errors in the stubs themselves (or ones mcs cannot place in a file) are charged to every
    model, so a broken toolchain can never look like a clean build.
    """
    mcs = find_mcs()
    if mcs is None:
        raise McsNotFoundError("mcs not found: install Debian's mono-mcs to compile models")
    with tempfile.TemporaryDirectory(prefix="arbor-mcs-") as tmp:
        root = Path(tmp)
        (root / "RenodeApi.cs").write_text(stubs_source(), encoding="utf-8")
        for name in sources:
            if Path(name).name != name or not name.endswith(".cs") or name == "RenodeApi.cs":
                raise RenodeError(f"bad model file name {name!r}")
            (root / name).write_text(sources[name], encoding="utf-8")
        cmd = [mcs, "-target:library", "-nologo", "-warn:0", "-out:models.dll", "RenodeApi.cs"]
        try:
            proc = subprocess.run(
                [*cmd, *sources],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RenodeError(f"mcs took longer than {_TIMEOUT_SECONDS}s") from exc
    per_file: dict[str, list[str]] = {name: [] for name in sources}
    unplaced: list[str] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        m = _DIAGNOSTIC.match(line.strip())
        if line.startswith("Compilation "):  # the summary line ("Compilation failed: ...")
            continue
        if m and m["file"] in per_file:
            per_file[m["file"]].append(f"{m['line']}:{m['col']}: {m['msg']}")
        elif m or _UNPLACED_ERROR.search(line):  # not notes like "(Location of the symbol...)"
            unplaced.append(line.strip())
    if proc.returncode != 0 and not unplaced and not any(per_file.values()):
        unplaced.append(f"mcs exited with {proc.returncode}")
    return {name: CompileResult(errors=tuple(errs + unplaced)) for name, errs in per_file.items()}
