"""Runs pages: start a workflow from the form (JSON input checked), the run page with its
approval buttons, approve/reject/cancel through RunManager, the list and its filters."""

from __future__ import annotations

import httpx
from _pages import Login

from arbor.runtime.runs import RunManager
from arbor.service.context import ServiceContext

Browser = tuple[httpx.AsyncClient, str]


def _manager(ctx: ServiceContext) -> RunManager:
    assert ctx.runs is not None
    return ctx.runs


async def _start_gate(client: httpx.AsyncClient, token: str, task: str = "ship v2") -> str:
    data = {"csrf_token": token, "workflow": "gate", "input": f'{{"task": "{task}"}}'}
    answer = await client.post("/runs/new", data=data)
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith("/runs/")
    return location.removeprefix("/runs/")


async def test_the_form_offers_workflows_with_an_example_input(admin_browser: Browser) -> None:
    client, _ = admin_browser
    form = await client.get("/runs/new?workflow=gate")
    assert form.status_code == 200
    assert '<option value="gate" selected>' in form.text
    assert '<option value="review-loop"' in form.text
    assert "&#34;task&#34;: &#34;&#34;" in form.text  # the state's required field, escaped


async def test_start_approve_and_finish_a_run(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, token = admin_browser
    runs = _manager(service_ctx)
    run_id = await _start_gate(client, token)
    assert (await runs.wait(run_id, timeout=10)).status == "waiting_approval"
    page = await client.get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert 'data-status="waiting_approval"' in page.text
    assert f'action="/runs/{run_id}/approve"' in page.text
    assert 'sse-connect="/runs/' in page.text  # still live: the page follows the run
    assert "approval requested" in page.text
    answer = await client.post(
        f"/runs/{run_id}/approve",
        data={"csrf_token": token, "reason": "looks <good>", "node": "sign_off"},
    )
    assert answer.status_code == 303
    run = await runs.wait(run_id, timeout=10)
    assert run.status == "succeeded"
    assert run.output is not None
    assert run.output["result"] == "shipped (looks <good>)"
    approvals = await runs.store.approvals.list(run_id=run_id)
    assert approvals[0].decided_by == "test-admin"
    done = await client.get(f"/runs/{run_id}")
    assert 'data-status="succeeded"' in done.text
    assert "looks &lt;good&gt;" in done.text
    assert "looks <good>" not in done.text
    assert "sse-connect" not in done.text  # finished: nothing to follow
    assert f'href="/runs/{run_id}?replay=1"' in done.text
    replay = await client.get(f"/runs/{run_id}?replay=1")
    assert f"/runs/{run_id}/stream?after=0&amp;replay=1" in replay.text


async def test_reject_takes_the_other_branch(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, token = admin_browser
    runs = _manager(service_ctx)
    run_id = await _start_gate(client, token)
    await runs.wait(run_id, timeout=10)
    answer = await client.post(
        f"/runs/{run_id}/reject", data={"csrf_token": token, "reason": "not yet"}
    )
    assert answer.status_code == 303
    run = await runs.wait(run_id, timeout=10)
    assert run.output is not None
    assert run.output["result"] == "dropped (not yet)"
    again = await client.post(f"/runs/{run_id}/approve", data={"csrf_token": token})
    assert again.status_code == 409
    assert "no pending approval" in again.text


async def test_cancel_a_waiting_run(admin_browser: Browser, service_ctx: ServiceContext) -> None:
    client, token = admin_browser
    runs = _manager(service_ctx)
    run_id = await _start_gate(client, token)
    await runs.wait(run_id, timeout=10)
    answer = await client.post(f"/runs/{run_id}/cancel", data={"csrf_token": token})
    assert answer.status_code == 303
    assert (await runs.store.runs.get(run_id)).status == "cancelled"
    listing = await client.get("/runs?status=cancelled")
    assert f'data-run="{run_id}"' in listing.text
    assert f'data-run="{run_id}"' not in (await client.get("/runs?status=succeeded")).text


async def test_bad_input_comes_back_with_the_reason(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, token = admin_browser
    cases = [
        ({"workflow": "gate", "input": "{not json"}, "not JSON"),
        ({"workflow": "gate", "input": "[1, 2]"}, "must be a JSON object"),
        ({"workflow": "gate", "input": "{}"}, "task"),
        ({"workflow": "nope", "input": "{}"}, "no workflow named"),
        ({"workflow": "gate", "input": '{"task": "x"}', "model": "no colon"}, "provider:model"),
    ]
    for data, reason in cases:
        answer = await client.post("/runs/new", data={"csrf_token": token, **data})
        assert answer.status_code == 422, (data, answer.status_code)
        assert reason in answer.text, (data, reason)
    page = await _manager(service_ctx).store.runs.list()
    assert page.runs == []


async def test_starting_needs_the_run_scope_and_csrf(
    browser: httpx.AsyncClient, service_ctx: ServiceContext, login: Login
) -> None:
    reader = await service_ctx.keys.create("reader", scopes=["read"])
    token = await login(browser, reader.key)
    assert (await browser.get("/runs/new")).status_code == 403
    data = {"workflow": "gate", "input": '{"task": "x"}'}
    assert (await browser.post("/runs/new", data={**data, "csrf_token": token})).status_code == 403
    runner = await service_ctx.keys.create("runner", scopes=["run"])
    token = await login(browser, runner.key)
    assert (await browser.post("/runs/new", data=data)).status_code == 403
    assert (await browser.post("/runs/new", data={**data, "csrf_token": "x"})).status_code == 403
    assert (await _manager(service_ctx).store.runs.list()).runs == []
    assert (await browser.post("/runs/new", data={**data, "csrf_token": token})).status_code == 303


async def test_unknown_run_and_bad_filters(admin_browser: Browser) -> None:
    client, _ = admin_browser
    assert (await client.get("/runs/run_nope")).status_code == 404
    assert (await client.get("/runs?status=bogus")).status_code == 422
    assert (await client.get("/runs?cursor=garbage")).status_code == 422


async def test_picking_a_workflow_fills_in_its_example(admin_browser: Browser) -> None:
    client, _ = admin_browser
    answer = await client.get("/runs/new/example?workflow=gate")
    assert answer.status_code == 200
    assert answer.text.startswith('<textarea id="input"')
    assert "&#34;task&#34;" in answer.text
    unknown = await client.get("/runs/new/example?workflow=nope")
    assert ">{}</textarea>" in unknown.text
