"""Batches pages: the list with progress bars (polling only while a batch is active), the
batch page with counts, items filter and drill-down, and pause / resume / cancel through
CSRF-checked forms (run scope)."""

from __future__ import annotations

import asyncio
import io
import re

import httpx
from _pages import Login

from arbor.runtime.batch_manager import BatchManager
from arbor.runtime.spec import BatchSpec
from arbor.service.context import ServiceContext
from arbor.store.batches import BatchRecord, NewItem

Browser = tuple[httpx.AsyncClient, str]


def _manager(ctx: ServiceContext) -> BatchManager:
    assert ctx.batches is not None
    return ctx.batches


async def _finished(ctx: ServiceContext, rows: list[NewItem]) -> BatchRecord:
    manager = _manager(ctx)
    spec = BatchSpec(kind="template", template="Say {{ w }}")
    record = await manager.create(rows, spec, name="words")
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        record = await manager.repo.get(record.id, progress=True)
        if record.status not in ("pending", "running"):
            return record
        await asyncio.sleep(0.02)
    raise AssertionError("the batch never finished")


async def test_list_and_batch_page_show_progress_and_items(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, _ = admin_browser
    rows = [
        NewItem(0, {"w": "hi"}),
        NewItem(1, error="row 2: invalid JSON"),
        NewItem(2, {"w": "yo"}),
    ]
    record = await _finished(service_ctx, rows)
    page = await client.get("/batches")
    assert page.status_code == 200
    assert '<a href="/batches" class="active">Batches</a>' in page.text
    assert f'data-batch="{record.id}" data-status="succeeded"' in page.text
    assert 'class="bar ok"' in page.text and 'data-done="3" data-total="3"' in page.text
    assert 'hx-trigger="every 2s"' not in page.text  # nothing active: no polling
    assert "<script>" not in page.text  # strict CSP: no inline scripts
    detail = await client.get(f"/batches/{record.id}")
    assert detail.status_code == 200
    assert 'data-count="succeeded">2<' in detail.text
    assert 'data-count="failed">1<' in detail.text
    assert 'data-item="1" data-status="failed"' in detail.text
    failed = await client.get(f"/batches/{record.id}?status=failed")
    assert 'data-item="1"' in failed.text and 'data-item="0"' not in failed.text
    item = await client.get(f"/batches/{record.id}/items/0")
    assert item.status_code == 200
    assert "echo: Say hi" in item.text and 'data-status="succeeded"' in item.text
    bad = await client.get(f"/batches/{record.id}/items/1")
    assert "row 2: invalid JSON" in bad.text
    assert (await client.get(f"/batches/{record.id}/items/7")).status_code == 404
    for fmt in ("jsonl", "csv"):
        expected = io.StringIO(newline="")
        await _manager(service_ctx).service.export(record.id, expected, fmt)  # type: ignore[arg-type]
        download = await client.get(f"/batches/{record.id}/results?format={fmt}")
        assert download.status_code == 200 and download.text == expected.getvalue()
    assert (await client.get("/batches/nope")).status_code == 404
    assert (await client.get("/batches?status=weird")).status_code == 422


async def test_items_are_paged(admin_browser: Browser, service_ctx: ServiceContext) -> None:
    client, _ = admin_browser
    record = await _finished(service_ctx, [NewItem(n, {"w": str(n)}) for n in range(60)])
    first = await client.get(f"/batches/{record.id}")
    assert first.text.count("data-item=") == 50
    found = re.search(r'id="next-items" href="([^"]+)"', first.text)
    assert found is not None
    second = await client.get(found.group(1).replace("&amp;", "&"))
    assert second.text.count("data-item=") == 10 and 'data-item="50"' in second.text
    assert 'id="next-items"' not in second.text


async def test_pause_resume_cancel_need_csrf_and_the_run_scope(
    admin_browser: Browser,
    browser: httpx.AsyncClient,
    service_ctx: ServiceContext,
    login: Login,
) -> None:
    client, token = admin_browser
    manager = _manager(service_ctx)
    spec = BatchSpec(kind="template", template="{{ w }}")
    # Created directly in the store (not driven): its status changes only by the buttons.
    record = await manager.service.create_from_items([NewItem(0, {"w": "x"})], spec, name="b")
    page = await client.get(f"/batches/{record.id}")
    assert f'action="/batches/{record.id}/pause"' in page.text
    assert 'hx-trigger="every 2s"' in page.text  # active: the live block polls
    assert (await client.post(f"/batches/{record.id}/pause")).status_code == 403  # no CSRF
    answer = await client.post(f"/batches/{record.id}/pause", data={"csrf_token": token})
    assert answer.status_code == 303
    assert (await manager.repo.get(record.id)).status == "paused"
    page = await client.get(f"/batches/{record.id}")
    assert f'action="/batches/{record.id}/resume"' in page.text
    bad = await client.post(
        f"/batches/{record.id}/resume", data={"csrf_token": token, "budget_usd": "lots"}
    )
    assert bad.status_code == 422
    answer = await client.post(
        f"/batches/{record.id}/resume", data={"csrf_token": token, "budget_usd": "2.5"}
    )
    assert answer.status_code == 303
    resumed = await manager.repo.get(record.id)
    assert resumed.spec["options"]["budget_usd"] == 2.5
    record = await manager.service.create_from_items([NewItem(0, {"w": "y"})], spec, name="c")
    answer = await client.post(f"/batches/{record.id}/cancel", data={"csrf_token": token})
    assert answer.status_code == 303
    assert (await manager.repo.get(record.id)).status == "cancelled"
    again = await client.post(f"/batches/{record.id}/cancel", data={"csrf_token": token})
    assert again.status_code == 409
    other = await manager.service.create_from_items([NewItem(0, {"w": "z"})], spec, name="d")
    reader = (await service_ctx.keys.create("reader", scopes=["read"])).key
    reader_token = await login(browser, reader)  # the same browser, now a reader's session
    page = await browser.get(f"/batches/{other.id}")
    assert page.status_code == 200 and "/cancel" not in page.text
    denied = await browser.post(f"/batches/{other.id}/cancel", data={"csrf_token": reader_token})
    assert denied.status_code == 403
    assert (await manager.repo.get(other.id)).status == "pending"
