"""The run page's Workspace panel: files listed, one shown escaped under the strict CSP, the
zip downloaded; bad paths refused; login required."""

from __future__ import annotations

import io
import zipfile

import httpx

from arbor.core.config import Settings
from arbor.runtime.sandbox import Workspace
from arbor.service.context import ServiceContext

SCRIPT = "<script>alert('x')</script>\n"


async def _run_with_workspace(ctx: ServiceContext, settings: Settings) -> str:
    assert ctx.runs is not None
    run_id = await ctx.runs.start("gate", {"task": "t"})
    await ctx.runs.wait(run_id, timeout=10)
    ws = Workspace.create(settings.home / "workspaces", run_id)
    ws.write("src/app.py", "print('hi')\n")
    ws.write("README.md", SCRIPT)
    return run_id


async def test_workspace_panel_viewer_and_zip(
    admin_browser: tuple[httpx.AsyncClient, str],
    service_ctx: ServiceContext,
    service_settings: Settings,
) -> None:
    browser, _ = admin_browser
    run_id = await _run_with_workspace(service_ctx, service_settings)
    page = await browser.get(f"/runs/{run_id}")
    assert page.status_code == 200 and f'hx-get="/runs/{run_id}/workspace/panel"' in page.text

    panel = await browser.get(f"/runs/{run_id}/workspace/panel")
    assert panel.status_code == 200
    assert "src/app.py" in panel.text and f"/runs/{run_id}/workspace.zip" in panel.text
    assert "workspace/view?path=src/app.py" in panel.text

    view = await browser.get(f"/runs/{run_id}/workspace/view", params={"path": "README.md"})
    assert view.status_code == 200
    assert "<script>alert" not in view.text
    assert "&lt;script&gt;alert(" in view.text
    assert "script-src 'self'" in view.headers["content-security-policy"]

    download = await browser.get(f"/runs/{run_id}/workspace.zip")
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        assert sorted(archive.namelist()) == ["README.md", "src/app.py"]

    for bad in ("../../etc/passwd", "/etc/passwd"):
        refused = await browser.get(f"/runs/{run_id}/workspace/view", params={"path": bad})
        assert refused.status_code == 422 and "root:" not in refused.text
    missing = await browser.get(f"/runs/{run_id}/workspace/view", params={"path": "x.py"})
    assert missing.status_code == 404


async def test_a_run_without_a_workspace_says_so(
    admin_browser: tuple[httpx.AsyncClient, str], service_ctx: ServiceContext
) -> None:
    browser, _ = admin_browser
    assert service_ctx.runs is not None
    run_id = await service_ctx.runs.start("gate", {"task": "t"})
    panel = await browser.get(f"/runs/{run_id}/workspace/panel")
    assert panel.status_code == 200 and "no workspace" in panel.text
    assert (await browser.get("/runs/run_unknown/workspace/panel")).status_code == 404


async def test_the_workspace_pages_need_a_login(browser: httpx.AsyncClient) -> None:
    answer = await browser.get("/runs/run_x/workspace.zip")
    assert answer.status_code == 302 and "/login" in answer.headers["location"]
