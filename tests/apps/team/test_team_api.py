"""The team over the service: POST /v1/runs {"workflow": "team"} writes the project into
ARBOR_HOME/workspaces/<run_id>; the workspace routes list it, show a file, zip it, refuse bad
paths (422), unknown runs or runs without a workspace (404) and requests without a key."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from _team_replies import GOOD, good_team, team

from arbor.apps.team.workflow import TeamConfig, build_team_workflow
from arbor.core.config import load_settings
from arbor.service.app import create_app
from arbor.service.context import ServiceContext, open_context
from arbor.testing import FunctionModel

pytestmark = pytest.mark.usefixtures("isolation")


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[ServiceContext]:
    settings = load_settings(
        home=tmp_path / "home",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 's.db'}",
        default_model="test:team",
        llm={"cache": {"enabled": False}},
    )
    fn, _ = team(good_team())

    def factory(model: str | None) -> object:
        return build_team_workflow(
            TeamConfig(
                model=model,
                workspaces=settings.home / "workspaces",
                published=settings.home / "published",
            )
        )

    context = await open_context(
        settings, models={"test:team": FunctionModel(fn)}, workflows={"team": factory}
    )  # type: ignore[dict-item]
    try:
        yield context
    finally:
        await context.aclose()


async def _client(ctx: ServiceContext, scopes: list[str]) -> httpx.AsyncClient:
    key = (await ctx.keys.create("t", scopes=scopes)).key
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {key}"},
    )


async def test_the_workspace_of_a_team_run_over_the_api(ctx: ServiceContext) -> None:
    async with await _client(ctx, ["admin"]) as http:
        created = await http.post(
            "/v1/runs", json={"workflow": "team", "input": {"prompt": "A calculator."}}
        )
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        assert ctx.runs is not None
        run = await ctx.runs.wait(run_id, timeout=60)
        assert run.status == "succeeded", run.error
        assert run.output is not None and run.output["report"]["ok"] is True

        listing = await http.get(f"/v1/runs/{run_id}/workspace/files")
        assert listing.status_code == 200
        paths = [f["path"] for f in listing.json()["files"]]
        assert "src/calc/__init__.py" in paths and "README.md" in paths

        one = await http.get(f"/v1/runs/{run_id}/workspace/files/src/calc/__init__.py")
        assert one.status_code == 200 and one.json()["content"] == GOOD

        download = await http.get(f"/v1/runs/{run_id}/workspace")
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
            assert sorted(archive.namelist()) == sorted(paths)
            assert archive.read("src/calc/__init__.py").decode() == GOOD

        for bad in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a%5Cb"):
            refused = await http.get(f"/v1/runs/{run_id}/workspace/files/{bad}")
            assert refused.status_code in (404, 422), (bad, refused.text)
            assert "root:" not in refused.text
        missing = await http.get(f"/v1/runs/{run_id}/workspace/files/nope.py")
        assert missing.status_code == 404
        unknown = await http.get("/v1/runs/no-such-run/workspace")
        assert unknown.status_code == 404


async def test_workspace_routes_need_the_read_scope_and_a_workspace(
    ctx: ServiceContext,
) -> None:
    assert ctx.runs is not None
    async with await _client(ctx, ["admin"]) as http:
        gate = await http.post("/v1/runs", json={"workflow": "review-loop", "input": {"task": "t"}})
        run_id = gate.json()["id"]
        await ctx.runs.wait(run_id, timeout=30)
        none = await http.get(f"/v1/runs/{run_id}/workspace")
        assert none.status_code == 404 and "no workspace" in none.text
        dotdot = await http.get(f"/v1/runs/{run_id}/workspace/files/a/../../x")
        assert dotdot.status_code in (404, 422)
    async with await _client(ctx, ["read"]) as reader:
        listed = await reader.get(f"/v1/runs/{run_id}/workspace/files")
        assert listed.status_code == 404  # read suffices; the run just has no workspace
    app = create_app(ctx)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as anonymous:
        denied = await anonymous.get(f"/v1/runs/{run_id}/workspace")
        assert denied.status_code == 401
