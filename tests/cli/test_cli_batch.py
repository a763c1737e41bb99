"""``arbor batch ...`` as a user runs it: real processes against the mock upstream for the
happy paths, the in-process runner for the one-line refusals (exit 2)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arbor.cli.main import app
from arbor.testing.mock_upstream import spawn_mock_upstream

PRICES = json.dumps({"mock:mock-1": {"input": 100000.0, "output": 100000.0}})


def _arbor(*args: str, home: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "ARBOR_HOME": str(home),
        "ARBOR_PROVIDERS__MOCK__BASE_URL": url,
        "ARBOR_LOG_LEVEL": "warning",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "arbor.cli", "batch", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=home,
    )


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_run_list_show_export(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text('q\nhello\n"a, b"\nthree,extra\nworld\n')
    (tmp_path / "t.j2").write_text("Say {{ q }}")
    with spawn_mock_upstream() as url:
        ran = _arbor(
            "run",
            str(data),
            "--template",
            "@t.j2",
            "--model",
            "mock:mock-1",
            "--rpm",
            "6000",
            home=tmp_path,
            url=url,
        )
        assert ran.returncode == 0, ran.stderr
        batch_id = _last_line(ran.stdout)
        assert batch_id.startswith("bat_")
        assert "3 succeeded, 1 failed" in ran.stdout
        assert "4 items, 1 malformed" in ran.stderr and "4/4" in ran.stderr  # the bar
        second = _arbor(
            "run",
            str(data),
            "--template",
            "{{ q }}!",
            "--model",
            "mock:mock-1",
            "--no-progress",
            home=tmp_path,
            url=url,
        )
        listed = _arbor("list", "--json", home=tmp_path, url=url)
        shown = _arbor("show", batch_id, "--json", home=tmp_path, url=url)
        out = tmp_path / "out.csv"
        exported = _arbor("export", batch_id, "--format", "jsonl", home=tmp_path, url=url)
        as_csv = _arbor(
            "export", batch_id, "--format", "csv", "--out", str(out), home=tmp_path, url=url
        )
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [_last_line(second.stdout), batch_id]  # newest first
    assert {"id", "status", "created_at"} <= set(rows[0])
    detail = json.loads(shown.stdout)
    assert (detail["id"], detail["status"], detail["total"]) == (batch_id, "succeeded", 4)
    assert (detail["succeeded"], detail["failed"], detail["pending"]) == (3, 1, 0)
    assert detail["spec"]["template"] == "Say {{ q }}"
    items = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [i["item"] for i in items] == [0, 1, 2, 3]
    assert items[1]["input"] == {"q": "a, b"} and items[1]["output"].endswith("Say a, b")
    assert items[2]["status"] == "failed" and items[2]["output"] is None
    assert items[2]["error"] == "row 4: 2 fields, the header has 1"
    assert as_csv.returncode == 0 and "wrote 4 items" in as_csv.stderr
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["status"] for r in table] == [i["status"] for i in items]


def test_budget_pause_resume_and_cancel(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"q": f"question {i}"}) + "\n" for i in range(30)))
    prices = {"ARBOR_LLM__PRICES": PRICES, "ARBOR_LLM__CACHE__ENABLED": "false"}
    with spawn_mock_upstream() as url:
        ran = _arbor(
            "run",
            str(data),
            "--template",
            "{{ q }}",
            "--model",
            "mock:mock-1",
            "--budget",
            "20",
            "--concurrency",
            "2",
            "--no-progress",
            home=tmp_path,
            url=url,
            **prices,
        )
        assert ran.returncode == 0, ran.stderr
        batch_id = _last_line(ran.stdout)
        assert "batch paused (budget)" in ran.stdout
        assert f"arbor batch resume {batch_id} --budget USD" in ran.stdout
        more = _arbor(
            "resume",
            batch_id,
            "--budget",
            "10000",
            "--no-progress",
            home=tmp_path,
            url=url,
            **prices,
        )
        assert more.returncode == 0, more.stderr
        assert "batch succeeded: 30 succeeded" in more.stdout
        again = _arbor("resume", batch_id, home=tmp_path, url=url)
        assert again.returncode == 2 and "is succeeded" in again.stderr
        second = _arbor(
            "run",
            str(data),
            "--template",
            "{{ q }}",
            "--model",
            "mock:mock-1",
            "--budget",
            "0",
            "--no-progress",
            home=tmp_path,
            url=url,
            **prices,
        )
        paused_id = _last_line(second.stdout)
        cancelled = _arbor("cancel", paused_id, home=tmp_path, url=url)
        twice = _arbor("cancel", paused_id, home=tmp_path, url=url)
    assert "paused (budget): 0 succeeded" in second.stdout
    assert cancelled.returncode == 0 and "(30 items cancelled)" in cancelled.stdout
    assert twice.returncode == 2 and "already cancelled" in twice.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "d.jsonl", "--template", "x", "--executor", "dask"],
            "--executor must be local or ray, got 'dask'",
        ),
        (["run", "d.jsonl"], "exactly one of --template, --agent or --workflow"),
        (["run", "d.jsonl", "--template", "x", "--agent", "a"], "exactly one of"),
        (["run", "missing.jsonl", "--template", "x"], "cannot read dataset"),
        (["run", "d.txt", "--template", "x"], "name it .jsonl or .csv"),
        (["run", "d.jsonl", "--template", "{% if %}"], "the prompt template does not parse"),
        (["run", "d.jsonl", "--template", "@nope.j2"], "cannot read template file"),
        (["run", "d.jsonl", "--agent", "nobody"], "agent 'nobody' not found"),
        (["run", "d.jsonl", "--workflow", "nope"], "no workflow named 'nope'"),
        (["run", "d.jsonl", "--template", "x", "--model", "nocolon"], "provider:model"),
        (["show", "bat_missing"], "no batch with id 'bat_missing'"),
        (["export", "bat_missing", "--format", "xml"], "--format must be jsonl or csv"),
        (["list", "--status", "odd"], "--status must be one of"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARBOR_HOME", str(tmp_path / "home"))
    (tmp_path / "d.jsonl").write_text('{"q": 1}\n')
    (tmp_path / "d.txt").write_text("")
    result = CliRunner().invoke(app, ["batch", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("from_env", [False, True])
def test_ray_without_ray_installed_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, from_env: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARBOR_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    (tmp_path / "d.jsonl").write_text('{"q": 1}\n')
    args = ["batch", "run", "d.jsonl", "--template", "x"]
    if from_env:
        monkeypatch.setenv("ARBOR_EXECUTOR", "ray")
    else:
        args += ["--executor", "ray"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "install arbor[ray]" in result.output
    assert "Traceback" not in result.output
