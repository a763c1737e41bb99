"""The run page's event stream: each event as an HTML row with its seq as the SSE id, the
status block after state changes, ``run-end`` last; resume after ``Last-Event-ID``; replay;
and the status folded from events (a terminal event wins over a lagging stored status)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from arbor.runtime.runs import RunManager
from arbor.service.context import ServiceContext
from arbor.service.dashboard.live import EventRow, node_progress
from arbor.service.dashboard.web import Dashboard

Browser = tuple[httpx.AsyncClient, str]


def _frames(body: str) -> list[dict[str, str]]:
    """SSE frames as {field: value} (data lines joined), comments dropped."""
    frames = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = f"{fields[name]}\n{value}" if name in fields else value
        if fields:
            frames.append(fields)
    return frames


async def _finished_gate_run(runs: RunManager) -> str:
    run_id = await runs.start("gate", {"task": "<b>t</b>"})
    await runs.wait(run_id, timeout=10)
    await runs.decide(run_id, True, "fine", "tester")
    assert (await runs.wait(run_id, timeout=10)).status == "succeeded"
    return run_id


async def test_a_finished_run_streams_rows_status_and_end(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, _ = admin_browser
    assert service_ctx.runs is not None
    run_id = await _finished_gate_run(service_ctx.runs)
    answer = await client.get(f"/runs/{run_id}/stream")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    frames = _frames(answer.text)
    assert frames[0]["event"] == "run-status"  # the page's block refreshed as it connects
    rows = [f for f in frames if f.get("event") == "run-event"]
    stored = await service_ctx.runs.store.event_log.list(run_id)
    assert [int(f["id"]) for f in rows] == [e.seq for e in stored]
    assert all(f'id="ev-{f["id"]}"' in f["data"] for f in rows)
    types = [e.type for e in stored]
    assert "approval_requested" in types and types[-1] == "run_finished"
    assert frames[-1]["event"] == "run-end"
    last_status = [f for f in frames if f.get("event") == "run-status"][-1]
    assert 'data-status="succeeded"' in last_status["data"]
    assert "shipped (fine)" in last_status["data"]
    assert "<b>t</b>" not in answer.text  # the input is escaped wherever it shows


async def test_the_stream_resumes_after_last_event_id(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, _ = admin_browser
    assert service_ctx.runs is not None
    run_id = await _finished_gate_run(service_ctx.runs)
    answer = await client.get(f"/runs/{run_id}/stream", headers={"Last-Event-ID": "3"})
    ids = [int(f["id"]) for f in _frames(answer.text) if f.get("event") == "run-event"]
    assert ids and ids[0] == 4
    after = await client.get(f"/runs/{run_id}/stream?after=5")
    ids = [int(f["id"]) for f in _frames(after.text) if f.get("event") == "run-event"]
    assert ids[0] == 6


async def test_replay_sends_the_stored_events_again(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, _ = admin_browser
    assert service_ctx.runs is not None
    run_id = await _finished_gate_run(service_ctx.runs)
    answer = await client.get(f"/runs/{run_id}/stream?replay=1")
    frames = _frames(answer.text)
    stored = await service_ctx.runs.store.event_log.list(run_id)
    assert [int(f["id"]) for f in frames if f.get("event") == "run-event"] == [
        e.seq for e in stored
    ]
    assert frames[-1]["event"] == "run-end"


async def test_the_stream_needs_a_session(
    browser: httpx.AsyncClient, service_ctx: ServiceContext
) -> None:
    assert service_ctx.runs is not None
    run_id = await _finished_gate_run(service_ctx.runs)
    answer = await browser.get(f"/runs/{run_id}/stream", headers={"Accept": "text/event-stream"})
    assert answer.status_code == 401
    assert "run-event" not in answer.text


async def test_an_unknown_run_has_no_stream(admin_browser: Browser) -> None:
    client, _ = admin_browser
    assert (await client.get("/runs/run_nope/stream")).status_code == 404


def test_node_progress_counts_visits_and_marks_failures() -> None:
    now = datetime.now(UTC)
    events = [
        EventRow(1, "run_started", None, {}, now),
        EventRow(2, "node_started", "a", {}, now),
        EventRow(3, "node_finished", "a", {}, now),
        EventRow(4, "node_started", "a", {}, now),
        EventRow(5, "node_finished", "a", {}, now),
        EventRow(6, "node_started", "b", {}, now),
    ]
    nodes = node_progress(events, "running")
    assert [(n.name, n.status, n.visits) for n in nodes] == [
        ("a", "finished", 2),
        ("b", "running", 0),
    ]
    failed = node_progress(events, "failed")
    assert failed[1].status == "failed"
    assert failed[0].status == "finished"


def test_timeline_rows_show_llm_and_tool_calls_escaped(service_ctx: ServiceContext) -> None:
    template = Dashboard(service_ctx).templates.get_template("_event.html")
    now = datetime.now(UTC)
    llm = template.render(
        e=EventRow(
            7,
            "llm_call",
            "write",
            {
                "agent": "writer",
                "model": "openai:gpt",
                "input_tokens": 120,
                "output_tokens": 30,
                "cost_usd": 0.0021,
                "latency_ms": 812.4,
                "cached": False,
            },
            now,
        )
    )
    assert 'id="ev-7"' in llm and 'data-type="llm_call"' in llm
    assert "writer" in llm and "openai:gpt" in llm
    assert "120 in / 30 out" in llm and "812.4 ms" in llm and "$0.0021" in llm
    tool = template.render(
        e=EventRow(
            8,
            "tool_call",
            "write",
            {
                "agent": "writer",
                "tool": "search",
                "call_id": "c1",
                "ok": False,
                "error": "<img src=x onerror=alert(1)>",
                "latency_ms": 3.0,
            },
            now,
        )
    )
    assert "search" in tool and "failed:" in tool
    assert "<img" not in tool and "&lt;img" in tool
