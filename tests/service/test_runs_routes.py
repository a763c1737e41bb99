"""/v1/runs: start → SSE events to completion, Last-Event-ID resume, approvals, cancel,
crash resume at start-up, pagination and filters, and the 4xx answers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from _workflows import gate, review_reply, slow
from arbor.llm.model import Model
from arbor.runtime.runs import OPTIONS_EVENT, RunManager
from arbor.service.context import ServiceContext
from arbor.service.routes.runs import _nodes
from arbor.store import EventRecord, RunRecord, RunRepository
from arbor.testing import FunctionModel

PROBLEM = "application/problem+json"


@dataclass
class Slow:
    started: asyncio.Event
    release: asyncio.Event


@pytest.fixture
def review_model() -> FunctionModel:
    return FunctionModel(review_reply, name="echo")


@pytest.fixture
def service_models(review_model: FunctionModel) -> dict[str, Model]:
    return {"test:echo": review_model}  # the default model answers review-loop's agents


@pytest.fixture
def blocker() -> Slow:
    return Slow(asyncio.Event(), asyncio.Event())


@pytest.fixture
async def runs(service_ctx: ServiceContext, blocker: Slow) -> AsyncIterator[RunManager]:
    """The context's manager, serving the test workflows besides the built-ins."""
    if service_ctx.runs is not None:
        await service_ctx.runs.aclose()
    service_ctx.runs = RunManager(
        service_ctx.checkpoints,
        service_ctx.client,
        workflows={"gate": gate, "slow": lambda m: slow(blocker.started, blocker.release)},
    )
    yield service_ctx.runs


def sse(text: str) -> list[dict[str, Any]]:
    """The events of an SSE body (keep-alive comments skipped)."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if fields:
            out.append(
                {"id": int(fields["id"]), "event": fields["event"], **json.loads(fields["data"])}
            )
    return out


async def start(http: httpx.AsyncClient, workflow: str, **input: Any) -> str:
    response = await http.post("/v1/runs", json={"workflow": workflow, "input": input})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    assert response.headers["location"] == f"/v1/runs/{run_id}"
    return run_id


async def test_start_then_stream_events_to_completion(
    http: httpx.AsyncClient,
    runs: RunManager,
    review_model: FunctionModel,
    service_ctx: ServiceContext,
    admin_key: str,
) -> None:
    response = await http.post(
        "/v1/runs", json={"workflow": "review-loop", "input": {"task": "Write add(a, b)."}}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["workflow"] == "review-loop" and body["status"] in ("pending", "running")
    run_id = body["id"]

    stream = await http.get(f"/v1/runs/{run_id}/events")  # follows until the run ends
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = sse(stream.text)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["seq"] == e["id"] and e["type"] == e["event"] for e in events)
    assert events[0]["event"] == OPTIONS_EVENT and events[-1]["event"] == "run_finished"
    assert [e["node"] for e in events if e["event"] == "node_finished"] == ["write", "review"]

    detail = (await http.get(f"/v1/runs/{run_id}")).json()
    assert detail["status"] == "succeeded" and detail["finished_at"] is not None
    assert detail["output"]["verdict"] == "approve" and detail["error"] is None
    assert detail["state"]["draft"].startswith("def add") and "__scheduler__" not in detail["state"]
    assert [(n["name"], n["status"], n["visits"]) for n in detail["nodes"]] == [
        ("write", "finished", 1),
        ("review", "finished", 1),
    ]
    # every LLM call of the run was made for the key that started it
    admin = (await service_ctx.keys.verify(admin_key)).id
    assert (await runs.options(run_id)).key_id == admin
    assert {(c.context.key_id, c.context.run_id) for c in review_model.calls} == {(admin, run_id)}

    replay = sse((await http.get(f"/v1/runs/{run_id}/events")).text)
    assert replay == events  # a finished run replays in full


async def test_last_event_id_and_after_resume_with_later_events_only(
    http: httpx.AsyncClient, runs: RunManager
) -> None:
    run_id = await start(http, "review-loop", task="t")
    await runs.wait(run_id, timeout=30)
    full = sse((await http.get(f"/v1/runs/{run_id}/events")).text)
    assert len(full) > 4
    resumed = sse(
        (await http.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "3"})).text
    )
    assert resumed == full[3:]
    after = sse((await http.get(f"/v1/runs/{run_id}/events", params={"after": 4})).text)
    assert after == full[4:]
    last = full[-1]["id"]
    assert sse((await http.get(f"/v1/runs/{run_id}/events?after={last}")).text) == []
    bad = await http.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM


async def test_the_stream_follows_a_run_live_from_a_resume_point(
    http: httpx.AsyncClient, runs: RunManager, blocker: Slow
) -> None:
    run_id = await start(http, "slow", task="t")
    await asyncio.wait_for(blocker.started.wait(), 30)
    so_far = await runs.store.events(run_id)
    stream = asyncio.create_task(
        http.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(so_far[-1].seq)})
    )
    await asyncio.sleep(0.1)
    assert not stream.done()  # still waiting for the run
    running = (await http.get(f"/v1/runs/{run_id}")).json()  # reading never disturbs it
    assert running["status"] == "running" and running["state"]["steps"] == ["first"]
    blocker.release.set()
    events = sse((await asyncio.wait_for(stream, 30)).text)
    assert events[0]["id"] == so_far[-1].seq + 1
    assert [e["event"] for e in events][-2:] == ["node_finished", "run_finished"]
    assert (await runs.wait(run_id, timeout=30)).status == "succeeded"


async def test_approve_resumes_a_paused_run_recording_the_keys_name(
    http: httpx.AsyncClient, runs: RunManager
) -> None:
    run_id = await start(http, "gate", task="t")
    await runs.wait(run_id, timeout=30)
    paused = (await http.get(f"/v1/runs/{run_id}")).json()
    assert paused["status"] == "waiting_approval"
    assert ("sign_off", "waiting_approval") in [(n["name"], n["status"]) for n in paused["nodes"]]
    assert [a["status"] for a in paused["approvals"]] == ["pending"]

    wrong = await http.post(f"/v1/runs/{run_id}/approve", json={"node": "prepare"})
    assert wrong.status_code == 409
    assert "no pending approval for node 'prepare' (pending: sign_off)" in wrong.json()["detail"]
    response = await http.post(
        f"/v1/runs/{run_id}/approve", json={"reason": "ship it", "node": "sign_off"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] in ("pending", "running", "succeeded")
    await runs.wait(run_id, timeout=30)
    done = (await http.get(f"/v1/runs/{run_id}")).json()
    assert done["status"] == "succeeded"
    assert done["output"]["result"] == "shipped (ship it)"
    (approval,) = done["approvals"]
    assert (approval["status"], approval["decided_by"], approval["reason"]) == (
        "approved",
        "test-admin",
        "ship it",
    )
    again = await http.post(f"/v1/runs/{run_id}/approve", json={"reason": "twice"})
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM
    assert "no pending approval" in again.json()["detail"]


async def test_reject_without_a_body_takes_the_other_branch(
    http: httpx.AsyncClient, runs: RunManager
) -> None:
    run_id = await start(http, "gate", task="t")
    await runs.wait(run_id, timeout=30)
    assert (await http.post(f"/v1/runs/{run_id}/reject")).status_code == 200
    await runs.wait(run_id, timeout=30)
    done = (await http.get(f"/v1/runs/{run_id}")).json()
    assert done["output"]["result"] == "dropped ()"
    assert done["approvals"][0]["status"] == "rejected"


async def test_cancel_stops_a_run_and_ends_its_stream(
    http: httpx.AsyncClient, runs: RunManager, blocker: Slow
) -> None:
    run_id = await start(http, "slow", task="t")
    await asyncio.wait_for(blocker.started.wait(), 30)
    response = await http.post(f"/v1/runs/{run_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert not runs.active(run_id)
    events = sse((await http.get(f"/v1/runs/{run_id}/events")).text)
    assert events[-1]["event"] == "run_cancelled"
    detail = (await http.get(f"/v1/runs/{run_id}")).json()
    assert ("wait", "cancelled") in [(n["name"], n["status"]) for n in detail["nodes"]]
    again = await http.post(f"/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


async def test_the_app_resumes_interrupted_runs_at_start_up(
    app: FastAPI, service_ctx: ServiceContext, runs: RunManager
) -> None:
    """A run a dead process left ``running`` (no checkpoint yet) is finished by the next
    start of the app."""
    store = service_ctx.checkpoints
    run_id = await store.create_run("review-loop", {"task": "t"})
    await store.set_status(run_id, "running")
    async with app.router.lifespan_context(app):
        run = await runs.wait(run_id, timeout=30)
    assert run.status == "succeeded", run.error


async def test_list_pages_newest_first_with_filters(
    http: httpx.AsyncClient, runs: RunManager
) -> None:
    gates = [await start(http, "gate", task=f"g{i}") for i in range(3)]
    loops = [await start(http, "review-loop", task=f"r{i}") for i in range(2)]
    for run_id in gates + loops:
        await runs.wait(run_id, timeout=30)

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/v1/runs", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(gates + loops))  # newest first, each exactly once

    waiting = (await http.get("/v1/runs", params={"status": "waiting_approval"})).json()
    assert {r["id"] for r in waiting["items"]} == set(gates)
    by_workflow = (await http.get("/v1/runs", params={"workflow": "review-loop"})).json()
    assert {r["id"] for r in by_workflow["items"]} == set(loops)
    assert by_workflow["next_cursor"] is None

    for params in ({"status": "sleeping"}, {"limit": 0}, {"limit": 201}, {"cursor": "%%%"}):
        bad = await http.get("/v1/runs", params=params)
        assert bad.status_code == 422, params
        assert bad.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/runs/run_missing"),
        ("GET", "/v1/runs/run_missing/events"),
        ("POST", "/v1/runs/run_missing/cancel"),
        ("POST", "/v1/runs/run_missing/approve"),
        ("POST", "/v1/runs/run_missing/reject"),
    ],
)
async def test_unknown_runs_are_404_problems(
    http: httpx.AsyncClient, runs: RunManager, method: str, path: str
) -> None:
    response = await http.request(method, path)
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 404 and "run_missing" in body["detail"] and body["request_id"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"input": {"task": "t"}}, "workflow"),
        ({"workflow": "review-loop", "input": {"task": "t"}, "extra": 1}, "extra"),
        ({"workflow": "review-loop", "input": []}, "input"),
        ({"workflow": "nope", "input": {}}, "no workflow named 'nope'"),
        ({"workflow": "review-loop", "input": {}}, "task: Field required"),
        ({"workflow": "review-loop", "input": {"task": "t"}, "model": "gpt"}, "provider:model"),
    ],
)
async def test_bad_run_bodies_are_422_and_store_nothing(
    http: httpx.AsyncClient,
    runs: RunManager,
    service_ctx: ServiceContext,
    body: dict[str, Any],
    fragment: str,
) -> None:
    response = await http.post("/v1/runs", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert fragment in response.json()["detail"]
    assert (await RunRepository(service_ctx.db).list()).runs == []


async def test_scopes(
    make_http: Any, service_ctx: ServiceContext, runs: RunManager, http: httpx.AsyncClient
) -> None:
    run_id = await start(http, "gate", task="t")
    await runs.wait(run_id, timeout=30)
    reader = make_http((await service_ctx.keys.create("reader", scopes=["read"])).key)
    assert (await reader.get("/v1/runs")).status_code == 200
    assert (await reader.get(f"/v1/runs/{run_id}")).status_code == 200
    for path, body in [
        ("/v1/runs", {"workflow": "gate", "input": {"task": "t"}}),
        (f"/v1/runs/{run_id}/approve", {}),
        (f"/v1/runs/{run_id}/cancel", None),
    ]:
        refused = await reader.post(path, json=body)
        assert refused.status_code == 403, path
        assert refused.headers["content-type"] == PROBLEM
    runner = make_http((await service_ctx.keys.create("runner", scopes=["run"])).key)
    assert (await runner.post(f"/v1/runs/{run_id}/approve", json={})).status_code == 200
    anonymous = make_http()
    assert (await anonymous.get("/v1/runs")).status_code == 401
    await runs.wait(run_id, timeout=30)
    decided = (await http.get(f"/v1/runs/{run_id}")).json()["approvals"][0]["decided_by"]
    assert decided == "runner"


async def test_the_context_drives_runs_on_its_own_checkpoint_store(
    service_ctx: ServiceContext,
) -> None:
    """open_context fills ``runs``, sharing the store (and so the event hub) with handlers."""
    assert isinstance(service_ctx.runs, RunManager)
    assert service_ctx.runs.store is service_ctx.checkpoints
    assert service_ctx.runs.client is service_ctx.client


async def test_live_stream_under_uvicorn_arrives_as_it_happens_and_a_disconnect_frees_it(
    app: FastAPI, service_ctx: ServiceContext, runs: RunManager, blocker: Slow, admin_key: str
) -> None:
    """Over a real socket: events reach the client while the run is still going, and a
    client that hangs up releases its watcher (the run itself carries on)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    hub = service_ctx.checkpoints.hub
    try:
        for _ in range(3000):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as c:
            run_id = await start(c, "slow", task="t")
            seen: list[str] = []
            async with c.stream("GET", f"/v1/runs/{run_id}/events") as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        seen.append(line.partition(":")[2].strip())
                    if seen[-1:] == ["node_started"] and seen.count("node_started") == 2:
                        break  # the blocking node has started: the run is mid-way
                assert hub.watchers() == 1
            for _ in range(200):  # the server notices the hang-up and closes the stream
                if hub.watchers() == 0:
                    break
                await asyncio.sleep(0.05)
            assert hub.watchers() == 0
            assert runs.active(run_id)
            blocker.release.set()
            assert (await runs.wait(run_id, timeout=30)).status == "succeeded"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        sock.close()


def test_node_summaries_carry_each_nodes_latest_event_time() -> None:
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    steps = [("node_started", "write"), ("node_started", "review"), ("node_finished", "write")]
    events = [
        EventRecord(
            id=f"evt_{i}",
            run_id="run_1",
            seq=i,
            type=t,
            node=n,
            data={},
            created_at=t0 + timedelta(seconds=i),
        )
        for i, (t, n) in enumerate(steps, 1)
    ]
    run = RunRecord(
        id="run_1",
        workflow="review",
        status="failed",
        input={},
        output=None,
        error="boom",
        current_node="review",
        parent_id=None,
        thread_id=None,
        created_at=t0,
        updated_at=t0,
        finished_at=t0,
    )
    assert [(n.name, n.status, n.visits, n.last_event_at) for n in _nodes(events, run)] == [
        ("write", "finished", 1, t0 + timedelta(seconds=3)),
        ("review", "failed", 0, t0 + timedelta(seconds=2)),
    ]
