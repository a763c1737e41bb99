"""A workflow batch over the API: each row is a durable run of the workflow (the item keeps
its run id), and a row that does not fit the workflow's state fails that item only."""

from __future__ import annotations

import httpx
import pytest
from test_batches_api import wait_done

from _workflows import review_reply
from arbor.llm.model import Model
from arbor.store import Database, RunRepository, migrate
from arbor.store.batches import BatchRepository, NewItem
from arbor.store.run_leases import RunLeases
from arbor.testing import FunctionModel


@pytest.fixture
def service_models() -> dict[str, Model]:
    return {"test:echo": FunctionModel(review_reply, name="echo")}


async def test_a_workflow_batch_runs_each_row_as_a_run(http: httpx.AsyncClient) -> None:
    rows = [{"task": "Write add(a, b)."}, {"nothing": "useful"}, {"task": "Write sub(a, b)."}]
    r = await http.post("/v1/batches", json={"workflow": "review-loop", "rows": rows})
    assert r.status_code == 202, r.text
    done = await wait_done(http, r.json()["id"], within=30)
    assert done["kind"] == "workflow" and done["status"] == "succeeded"
    assert (done["progress"]["succeeded"], done["progress"]["failed"]) == (2, 1)
    items = (await http.get(f"/v1/batches/{done['id']}/items")).json()["items"]
    assert items[0]["run_id"] and items[0]["status"] == "succeeded"
    assert items[1]["status"] == "failed" and items[1]["error"]
    run = await http.get(f"/v1/runs/{items[0]['run_id']}")
    assert run.status_code == 200 and run.json()["status"] == "succeeded"


async def test_a_batch_items_run_is_never_taken_by_the_run_sweep(db: Database) -> None:
    """Two servers: a server starting up must not resume the run a batch item is driving
    elsewhere (the item's lease decides who drives it), while other unleased runs are
    still resumed."""
    await migrate(db)
    runs = RunRepository(db)
    item_run = await runs.create("review-loop", {"task": "a"}, status="running")
    other_run = await runs.create("review-loop", {"task": "b"}, status="running")
    batches = BatchRepository(db)
    batch = await batches.create(
        name="b",
        kind="workflow",
        spec={"kind": "workflow", "workflow": "review-loop"},
        items=[NewItem(0, {"task": "a"})],
    )
    [claimed] = await batches.claim(batch.id, "worker-1", 1, 60)
    assert await batches.set_run_id(batch.id, claimed.item, "worker-1", item_run.id)
    claimable = await RunLeases(db).claimable(unleased=True)
    assert other_run.id in claimable and item_run.id not in claimable
