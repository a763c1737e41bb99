"""The README's Python examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    outputs = []
    for i, code in enumerate(blocks):
        script = tmp_path / f"example_{i}.py"
        script.write_text(code)
        proc = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, f"README example {i} failed:\n{proc.stderr}"
        outputs.append(proc.stdout)
    assert len(outputs) == 2
    assert "Mock reply" in outputs[0]  # the LLM client example
    assert outputs[1].strip() == "succeeded 5 True"  # the agents and workflows example


#: Where README examples may import Arbor from: the public face, the test doubles, and
#: one documented package per application.
PUBLIC_PACKAGES = {
    "arbor",
    "arbor.testing",
    "arbor.apps.renode",
    "arbor.apps.team",
    "arbor.autogen",
}


def test_readme_examples_import_only_public_packages() -> None:
    text = README.read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    inline = re.findall(r"`(from arbor[\w.]* import [^`]+|import arbor[\w.]*)`", text)
    statements = re.findall(r"^\s*(?:from (arbor[\w.]*) import|import (arbor[\w.]*))", code, re.M)
    modules = {a or b for a, b in statements}
    modules |= {re.split(r"\s+", s)[1] for s in inline}
    assert modules, "no Arbor import found in the README"
    outside = {
        m
        for m in modules
        if m not in PUBLIC_PACKAGES and not m.startswith("arbor.autogen.")  # generated modules
    }
    assert not outside, f"README imports internals: {sorted(outside)}"


def test_readme_gives_exactly_the_two_setup_commands() -> None:
    text = README.read_text()
    setup = text.split("## Set-up", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in setup.strip().splitlines()]
    assert commands == ["make run", "make test"]
