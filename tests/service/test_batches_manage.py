"""/v1/batches lifecycle: cancel, pause and resume (409s for invalid transitions), items
filters and pagination, the results download equal to ``arbor batch export``, usage stamped
with the creating key, and BatchManagers sharing a batch: two servers on one database give
exactly one result (and one upstream call) per item; a server shut down mid-batch hands its
items back and another finishes them."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from test_batches_api import wait_done

from arbor.core.config import Settings, load_settings
from arbor.llm.model import Model
from arbor.llm.types import ChatRequest
from arbor.runtime import batch_manager as batches_module
from arbor.service.context import ServiceContext, open_context
from arbor.store import UsageRepository
from arbor.store.batches import NewItem
from arbor.testing import FunctionModel


class Gate:
    """Replies at once, except to prompts containing ``slow`` while the gate is closed."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.waiting = 0

    async def reply(self, request: ChatRequest) -> str:
        text = str(request.messages[-1].content)
        if "slow" in text:
            self.waiting += 1
            await self.open.wait()
        await asyncio.sleep(0.005)
        return f"done: {text}"


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def service_models(gate: Gate) -> dict[str, Model]:
    return {"test:echo": FunctionModel(gate.reply, name="gate")}


async def until(predicate: Any, within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def create(http: httpx.AsyncClient, rows: list[Any], **options: Any) -> dict[str, Any]:
    r = await http.post("/v1/batches", json={"template": "{{ t }}", "rows": rows, **options})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_cancel_stops_the_batch_and_cancels_its_items(
    http: httpx.AsyncClient, gate: Gate
) -> None:
    batch = await create(http, [{"t": f"slow {n}"} for n in range(5)], concurrency=1)

    async def waiting() -> bool:
        return gate.waiting >= 1

    await until(waiting)
    r = await http.post(f"/v1/batches/{batch['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["progress"]["cancelled"] == 5
    assert (await http.post(f"/v1/batches/{batch['id']}/cancel")).status_code == 409
    assert (await http.post(f"/v1/batches/{batch['id']}/resume")).status_code == 409
    assert (await http.post(f"/v1/batches/{batch['id']}/pause")).status_code == 409
    gate.open.set()
    await asyncio.sleep(0.2)
    after = (await http.get(f"/v1/batches/{batch['id']}")).json()
    assert after["status"] == "cancelled" and after["progress"]["succeeded"] == 0
    assert (await http.post("/v1/batches/nope/cancel")).status_code == 404


async def test_pause_then_resume_with_a_new_budget(http: httpx.AsyncClient, gate: Gate) -> None:
    batch = await create(http, [{"t": f"slow {n}"} for n in range(3)], concurrency=1)

    async def waiting() -> bool:
        return gate.waiting >= 1

    await until(waiting)
    r = await http.post(f"/v1/batches/{batch['id']}/pause")
    assert r.status_code == 200 and r.json()["status"] == "paused", r.text
    assert r.json()["paused_reason"] == "user"
    assert (await http.post(f"/v1/batches/{batch['id']}/pause")).status_code == 409
    gate.open.set()  # the item in flight finishes; the rest stay pending

    async def settled() -> bool:
        body = (await http.get(f"/v1/batches/{batch['id']}")).json()
        return bool(body["progress"]["running"] == 0 and not body["driven_here"])

    await until(settled)
    paused = (await http.get(f"/v1/batches/{batch['id']}")).json()
    assert paused["status"] == "paused" and paused["progress"]["pending"] == 2
    r = await http.post(f"/v1/batches/{batch['id']}/resume", json={"budget_usd": 5})
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["options"]["budget_usd"] == 5
    done = await wait_done(http, batch["id"])
    assert done["status"] == "succeeded" and done["progress"]["succeeded"] == 3
    r = await http.post(f"/v1/batches/{batch['id']}/resume", json={"budget_usd": -1})
    assert r.status_code == 422


async def test_items_filter_and_pagination(http: httpx.AsyncClient) -> None:
    data = b"".join(b"not json\n" if n % 3 == 0 else b'{"t": "row %d"}\n' % n for n in range(10))
    r = await http.post(
        "/v1/batches", files={"file": ("d.jsonl", data)}, data={"template": "{{ t }}"}
    )
    batch_id = r.json()["id"]
    await wait_done(http, batch_id)
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"status": "succeeded", "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await http.get(f"/v1/batches/{batch_id}/items", params=params)).json()
        seen += [i["item"] for i in page["items"]]
        assert all(i["status"] == "succeeded" for i in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [1, 2, 4, 5, 7, 8]
    failed = (await http.get(f"/v1/batches/{batch_id}/items?status=failed")).json()["items"]
    assert [i["item"] for i in failed] == [0, 3, 6, 9]
    assert all("invalid JSON" in i["error"] for i in failed)
    item = (await http.get(f"/v1/batches/{batch_id}/items/4")).json()
    assert item["input"] == {"t": "row 4"} and item["output"] == "done: row 4"
    assert item["attempts"] == 1 and item["input_tokens"] > 0
    assert (await http.get(f"/v1/batches/{batch_id}/items/99")).status_code == 404
    assert (await http.get(f"/v1/batches/{batch_id}/items?cursor=-4")).status_code == 422


async def test_results_download_equals_export(
    http: httpx.AsyncClient, service_ctx: ServiceContext
) -> None:
    data = b'{"t": "a"}\nbroken\n{"t": "b, with \\"quotes\\""}\n'
    r = await http.post(
        "/v1/batches", files={"file": ("d.jsonl", data)}, data={"template": "{{ t }}"}
    )
    batch_id = r.json()["id"]
    await wait_done(http, batch_id)
    assert service_ctx.batches is not None
    for fmt in ("jsonl", "csv"):
        expected = io.StringIO(newline="")
        await service_ctx.batches.service.export(batch_id, expected, fmt)  # type: ignore[arg-type]
        r = await http.get(f"/v1/batches/{batch_id}/results", params={"format": fmt})
        assert r.status_code == 200
        assert r.text == expected.getvalue()
        assert f"batch-{batch_id}.{fmt}" in r.headers["content-disposition"]
    assert r.headers["content-type"].startswith("text/csv")
    assert (await http.get("/v1/batches/nope/results")).status_code == 404
    assert (await http.get(f"/v1/batches/{batch_id}/results?format=xml")).status_code == 422


async def test_usage_is_stamped_with_the_creating_key_and_the_batch(
    service_ctx: ServiceContext, make_http: Any
) -> None:
    created = await service_ctx.keys.create("batcher", scopes=["run"])
    async with make_http(created.key) as http:
        batch = await create(http, [{"t": "x"}, {"t": "y"}])
        await wait_done(http, batch["id"])
    # The batch's client writes its usage rows in the background (every 0.5 s and when it
    # closes, just after the batch reads "succeeded"): wait for them, however loaded we are.
    usage = UsageRepository(service_ctx.db)
    records = await usage.records(batch_id=batch["id"])
    for _ in range(300):
        if len(records) >= 2:
            break
        await asyncio.sleep(0.1)
        records = await usage.records(batch_id=batch["id"])
    assert len(records) == 2
    assert {r.key_id for r in records} == {created.record.id}


# ---- several managers on one database ---------------------------------------------------


@pytest.fixture
async def second_ctx(
    service_settings: Settings, service_models: dict[str, Model]
) -> AsyncIterator[ServiceContext]:
    """A second server on the same database (its own client, manager and owner)."""
    ctx = await open_context(service_settings, models=service_models)
    try:
        yield ctx
    finally:
        await ctx.aclose()


async def test_two_managers_share_a_batch_with_one_result_per_item(
    http: httpx.AsyncClient,
    service_ctx: ServiceContext,
    second_ctx: ServiceContext,
    service_models: dict[str, Model],
) -> None:
    model = service_models["test:echo"]
    assert isinstance(model, FunctionModel)
    batch = await create(http, [{"t": f"r{n}"} for n in range(60)], concurrency=2)
    assert second_ctx.batches is not None and service_ctx.batches is not None
    joined = await second_ctx.batches.join_running()
    assert batch["id"] in joined
    assert await second_ctx.batches.join_running() == []  # already driven there
    done = await wait_done(http, batch["id"])
    assert done["status"] == "succeeded" and done["progress"]["succeeded"] == 60
    items = (await http.get(f"/v1/batches/{batch['id']}/items?limit=500")).json()["items"]
    assert sorted(i["item"] for i in items) == list(range(60))
    assert all(i["attempts"] == 1 for i in items)
    prompts = [str(c.messages[-1].content) for c in model.calls]
    assert sorted(prompts) == sorted(f"r{n}" for n in range(60))  # one call per item


async def test_a_server_shut_down_mid_batch_hands_its_items_to_another(
    service_settings: Settings,
    service_models: dict[str, Model],
    second_ctx: ServiceContext,
    gate: Gate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batches_module, "_SHUTDOWN_GRACE", 0.1)
    first = await open_context(service_settings, models=service_models)
    try:
        assert first.batches is not None
        from arbor.runtime.spec import BatchSpec

        spec = BatchSpec(kind="template", template="{{ t }}")
        items = [NewItem(n, {"t": f"slow {n}"}) for n in range(4)]
        record = await first.batches.create(items, spec, name="handover")

        async def waiting() -> bool:
            return gate.waiting >= 4

        await until(waiting)
    finally:
        await first.aclose()  # stops its items and releases their leases
    repo = second_ctx.batches.repo if second_ctx.batches is not None else None
    assert repo is not None
    left = await repo.get(record.id, progress=True)
    assert left.status == "running" and left.progress is not None
    assert left.progress.pending == 4 and left.progress.running == 0
    gate.open.set()
    assert second_ctx.batches is not None
    assert await second_ctx.batches.join_running() == [record.id]

    async def finished() -> bool:
        return (await repo.get(record.id)).status == "succeeded"

    await until(finished)
    final = await repo.items(record.id)
    assert [i.status for i in final] == ["succeeded"] * 4


def test_poll_setting(service_settings: Settings) -> None:
    assert service_settings.service.batch_poll_seconds == 2.0
    tuned = load_settings(service={"batch_poll_seconds": 0.5})
    assert tuned.service.batch_poll_seconds == 0.5


async def test_a_batch_this_server_cannot_drive_is_left_to_others(
    service_ctx: ServiceContext,
) -> None:
    manager = service_ctx.batches
    assert manager is not None
    spec = {"kind": "workflow", "workflow": "only-elsewhere"}  # e.g. an app's workflow
    record = await manager.repo.create(
        name="elsewhere", kind="workflow", spec=spec, items=[NewItem(0, {"task": "x"})]
    )
    assert await manager.join_running() == [record.id]

    async def given_up() -> bool:
        return not manager.active(record.id)

    await until(given_up)
    assert (await manager.repo.get(record.id)).status == "pending"  # not failed
    assert await manager.join_running() == []  # left alone for a while
