"""/v1/batches: create (upload JSONL/CSV, dataset reference, inline rows) → progress to done,
the list and its pagination, and the 4xx answers of bad requests and missing scopes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from arbor.service.context import ServiceContext

PROBLEM = "application/problem+json"


async def wait_done(http: httpx.AsyncClient, batch_id: str, within: float = 30.0) -> dict[str, Any]:
    """Poll the batch until it leaves pending/running; returns its last detail."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        r = await http.get(f"/v1/batches/{batch_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] not in ("pending", "running"):
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.05)


async def test_create_from_inline_rows_runs_to_done(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/v1/batches",
        json={"template": "Say {{ word }}", "rows": [{"word": "a"}, {"word": "b"}], "name": "w"},
    )
    assert r.status_code == 202, r.text
    created = r.json()
    assert r.headers["location"] == f"/v1/batches/{created['id']}"
    assert created["name"] == "w" and created["kind"] == "template"
    assert created["progress"]["total"] == 2
    done = await wait_done(http, created["id"])
    assert done["status"] == "succeeded"
    p = done["progress"]
    assert (p["succeeded"], p["failed"], p["pending"], p["done"]) == (2, 0, 0, 2)
    items = (await http.get(f"/v1/batches/{created['id']}/items")).json()["items"]
    assert [i["output"] for i in items] == ["echo: Say a", "echo: Say b"]


async def test_upload_jsonl_with_a_malformed_row_fails_that_item_only(
    http: httpx.AsyncClient,
) -> None:
    data = b'{"q": "one"}\nnot json\n{"q": "three"}\n'
    r = await http.post(
        "/v1/batches",
        files={"file": ("rows.jsonl", data, "application/x-ndjson")},
        data={"template": "Q: {{ q }}", "concurrency": "2", "lease_seconds": "5"},
    )
    assert r.status_code == 202, r.text
    batch = r.json()
    assert batch["name"] == "rows.jsonl" and batch["spec"]["options"]["concurrency"] == 2
    assert batch["spec"]["options"]["lease_seconds"] == 5
    done = await wait_done(http, batch["id"])
    assert done["status"] == "succeeded"
    assert (done["progress"]["succeeded"], done["progress"]["failed"]) == (2, 1)
    bad = (await http.get(f"/v1/batches/{batch['id']}/items/1")).json()
    assert bad["status"] == "failed" and "row 2: invalid JSON" in bad["error"]


async def test_upload_csv(http: httpx.AsyncClient) -> None:
    data = b"city,country\nParis,France\nLima,Peru\n"
    r = await http.post(
        "/v1/batches",
        files={"file": ("cities.csv", data, "text/csv")},
        data={"template": "{{ city }} is in {{ country }}"},
    )
    assert r.status_code == 202, r.text
    done = await wait_done(http, r.json()["id"])
    assert done["progress"]["succeeded"] == 2
    items = (await http.get(f"/v1/batches/{done['id']}/items")).json()["items"]
    assert items[1]["input"] == {"city": "Lima", "country": "Peru"}
    assert items[1]["output"] == "echo: Lima is in Peru"


async def test_create_from_a_dataset_under_home(
    http: httpx.AsyncClient, service_ctx: ServiceContext
) -> None:
    datasets = service_ctx.settings.home / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "d.jsonl").write_text('{"x": 1}\n{"x": 2}\n{"x": 3}\n')
    r = await http.post("/v1/batches", json={"template": "{{ x }}", "dataset": "d.jsonl"})
    assert r.status_code == 202, r.text
    done = await wait_done(http, r.json()["id"])
    assert done["status"] == "succeeded" and done["progress"]["succeeded"] == 3
    assert done["name"] == "d.jsonl"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"rows": [{"a": 1}]}, "template"),
        ({"template": "x", "agent": "a", "rows": [1]}, "agent"),
        ({"template": "{{ x", "rows": [1]}, "template"),
        ({"agent": "nobody", "rows": [1]}, "agent"),
        ({"workflow": "nothing-like-it", "rows": [1]}, "workflow"),
        ({"template": "x", "model": "bad model", "rows": [1]}, "model"),
        ({"template": "x"}, "dataset"),
        ({"template": "x", "rows": []}, "rows"),
        ({"template": "x", "dataset": "../service.db"}, "dataset"),
        ({"template": "x", "dataset": "/etc/passwd"}, "dataset"),
        ({"template": "x", "dataset": "missing.jsonl"}, "dataset"),
    ],
)
async def test_bad_requests_are_422_naming_the_field(
    http: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    r = await http.post("/v1/batches", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["errors"][0]["loc"] == ["body", param], r.json()


async def test_bad_uploads_are_4xx(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/v1/batches", files={"file": ("x.csv", b"a,a\n1,2\n", "text/csv")}, data={"template": "x"}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"][-1] == "file", r.text
    r = await http.post(
        "/v1/batches", files={"file": ("x.txt", b"{}\n", "text/plain")}, data={"template": "x"}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"][-1] == "format", r.text
    r = await http.post("/v1/batches", data={"template": "x"}, files={"other": ("a", b"")})
    assert r.status_code == 422, r.text
    r = await http.post(
        "/v1/batches", files={"file": ("x.jsonl", b"{}\n", "text/plain")}, data={"rpm": "lots"}
    )
    assert r.status_code == 422, r.text
    huge = b'{"q": "' + b"x" * 2_000_000 + b'"}\n'
    r = await http.post(
        "/v1/batches", files={"file": ("x.jsonl", huge, "text/plain")}, data={"template": "x"}
    )
    assert r.status_code == 413, r.text


async def test_list_newest_first_with_pagination_and_status_filter(
    http: httpx.AsyncClient,
) -> None:
    ids = []
    for n in range(3):
        r = await http.post("/v1/batches", json={"template": "t", "rows": [n], "name": f"b{n}"})
        ids.append(r.json()["id"])
        await wait_done(http, ids[-1])
    page = (await http.get("/v1/batches", params={"limit": 2})).json()
    assert [b["id"] for b in page["items"]] == [ids[2], ids[1]]
    rest = (
        await http.get("/v1/batches", params={"limit": 2, "cursor": page["next_cursor"]})
    ).json()
    assert [b["id"] for b in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    done = (await http.get("/v1/batches", params={"status": "succeeded"})).json()["items"]
    assert len(done) == 3 and done[0]["progress"]["succeeded"] == 1
    assert (await http.get("/v1/batches", params={"status": "paused"})).json()["items"] == []
    r = await http.get("/v1/batches", params={"cursor": "nonsense"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"][-1] == "cursor"


async def test_unknown_ids_are_404(http: httpx.AsyncClient) -> None:
    for path in ("/v1/batches/nope", "/v1/batches/nope/items", "/v1/batches/nope/items/0"):
        r = await http.get(path)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)


async def test_scopes(service_ctx: ServiceContext, make_http: Any) -> None:
    reader = (await service_ctx.keys.create("reader", scopes=["read"])).key
    runner = (await service_ctx.keys.create("runner", scopes=["run"])).key
    body = {"template": "t", "rows": [1]}
    async with make_http() as anonymous:
        assert (await anonymous.get("/v1/batches")).status_code == 401
        assert (await anonymous.post("/v1/batches", json=body)).status_code == 401
    async with make_http(reader) as read:
        assert (await read.get("/v1/batches")).status_code == 200
        assert (await read.post("/v1/batches", json=body)).status_code == 403
        assert (await read.post("/v1/batches", json={"junk": 1})).status_code == 403
    async with make_http(runner) as run:
        r = await run.post("/v1/batches", json=body)
        assert r.status_code == 202
        assert r.json()["spec"]["key_id"] is not None
        await wait_done(run, r.json()["id"])


def test_datasets_path_is_under_home(service_ctx: ServiceContext) -> None:
    from arbor.service.batch_input import datasets_dir

    assert datasets_dir(service_ctx) == Path(service_ctx.settings.home) / "datasets"
