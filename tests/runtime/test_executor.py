"""The local executor's state machine with in-process model doubles (fast, exact)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from _batch_helpers import MakeService, write_jsonl

from arbor.core.errors import ProviderConnectionError, ProviderHTTPError
from arbor.llm.types import ChatRequest
from arbor.runtime import BatchSpec
from arbor.runtime.executor import LocalExecutor
from arbor.testing import FunctionModel


def _spec(**options: object) -> BatchSpec:
    return BatchSpec.model_validate(
        {"kind": "template", "template": "Q: {{ q }}", "model": "test:f", "options": options}
    )


def _echo(request: ChatRequest) -> str:
    return f"A({request.messages[-1].content})"


async def test_every_item_gets_exactly_one_result(
    make_service: MakeService, tmp_path: Path
) -> None:
    model = FunctionModel(_echo)
    service = make_service({"test:f": model})
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": i} for i in range(50)])
    batch = await service.create(data, _spec(concurrency=7))
    assert batch.status == "pending" and batch.total == 50
    done = await service.run(batch.id)
    assert done.status == "succeeded" and done.finished_at is not None
    assert done.progress is not None and done.progress.succeeded == 50
    items = [i async for i in service.iter_items(batch.id)]
    assert [i.output for i in items] == [f"A(Q: {i})" for i in range(50)]
    assert all(i.attempts == 1 and i.input_tokens > 0 for i in items)
    assert len(model.calls) == 50
    assert all(c.context.batch_id == batch.id for c in model.calls)
    assert done.input_tokens == sum(i.input_tokens for i in items)  # snapshot on the row


async def test_retriable_failures_requeue_until_max_attempts(
    make_service: MakeService, tmp_path: Path
) -> None:
    seen: dict[str, int] = {}

    def flaky(request: ChatRequest) -> str:
        text = request.messages[-1].content or ""
        seen[text] = seen.get(text, 0) + 1
        if text == "Q: never":
            raise ProviderHTTPError("bad gateway", status_code=502)
        if text == "Q: twice" and seen[text] <= 2:  # the LLM layer's 2 attempts, first claim
            raise ProviderConnectionError("reset")
        if text == "Q: invalid":
            raise ProviderHTTPError("bad request", status_code=400)
        return "ok"

    service = make_service({"test:f": FunctionModel(flaky)})
    rows = [{"q": "never"}, {"q": "twice"}, {"q": "invalid"}, {"q": "fine"}]
    batch = await service.create(write_jsonl(tmp_path / "d.jsonl", rows), _spec(max_attempts=3))
    await service.run(batch.id)
    items = {i.input["q"]: i async for i in service.iter_items(batch.id)}
    assert (items["never"].status, items["never"].attempts) == ("failed", 3)
    assert items["never"].error is not None and "bad gateway" in items["never"].error
    assert (items["twice"].status, items["twice"].attempts) == ("succeeded", 2)
    assert (items["invalid"].status, items["invalid"].attempts) == ("failed", 1)  # not retried
    assert items["fine"].status == "succeeded"
    assert seen["Q: never"] == 6  # 3 claims x 2 LLM attempts


async def test_an_upstream_that_stays_down_fails_items_instead_of_hanging(
    make_service: MakeService, tmp_path: Path
) -> None:
    def down(request: ChatRequest) -> str:
        raise ProviderHTTPError("bad gateway", status_code=502)

    service = make_service(
        {"test:f": FunctionModel(down)},
        llm={"breaker": {"failure_threshold": 1, "reset_timeout": 0.01}},
    )
    rows = [{"q": i} for i in range(3)]
    batch = await service.create(write_jsonl(tmp_path / "d.jsonl", rows), _spec(max_attempts=2))
    done = await asyncio.wait_for(service.run(batch.id), 60)
    assert done.status == "succeeded"  # finished: every item accounted for
    items = [i async for i in service.iter_items(batch.id)]
    assert [(i.status, i.attempts) for i in items] == [("failed", 2)] * 3
    assert all(i.error and ("bad gateway" in i.error or "circuit" in i.error) for i in items)


async def test_a_missing_template_variable_fails_that_item_only(
    make_service: MakeService, tmp_path: Path
) -> None:
    service = make_service({"test:f": FunctionModel(_echo)})
    rows = [{"q": 1}, {"other": 2}, {"q": 3}]
    batch = await service.create(write_jsonl(tmp_path / "d.jsonl", rows), _spec())
    done = await service.run(batch.id)
    assert done.status == "succeeded"
    items = [i async for i in service.iter_items(batch.id)]
    assert [i.status for i in items] == ["succeeded", "failed", "succeeded"]
    assert items[1].error == "template: 'q' is undefined in this row"


async def test_budget_pauses_with_the_rest_pending_and_resume_continues(
    make_service: MakeService, tmp_path: Path
) -> None:
    prices = {"test:f": {"input": 100_000.0, "output": 100_000.0}}  # $0.1 a token
    service = make_service({"test:f": FunctionModel(_echo)}, llm={"prices": prices})
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": i} for i in range(40)])
    # A call costs ~$0.9 and reserves ~$2.8 (prompt + max_tokens) up front.
    batch = await service.create(data, _spec(concurrency=3, budget_usd=10.0, max_tokens=20))
    paused = await service.run(batch.id)
    assert (paused.status, paused.paused_reason) == ("paused", "budget")
    p = paused.progress
    assert p is not None and 0 < p.succeeded < 40 and p.pending == 40 - p.succeeded
    assert p.cost_usd <= 10.0
    assert p.failed == 0 and p.running == 0  # nothing lost, nothing held
    again = await service.run(batch.id)  # still over budget: pauses at once
    assert again.status == "paused" and again.progress is not None
    assert again.progress.succeeded == p.succeeded
    await service.resume(batch.id, budget_usd=1000.0)
    finished = await service.run(batch.id)
    assert finished.status == "succeeded"
    assert finished.progress is not None and finished.progress.succeeded == 40


async def test_an_executor_starting_after_a_pause_leaves_the_batch_paused(
    make_service: MakeService, tmp_path: Path
) -> None:
    """A Ray actor or a second server can start its executor a moment after a user paused
    the batch: it must not undo the pause (only a resume makes the batch runnable again)."""
    model = FunctionModel(_echo)
    service = make_service({"test:f": model})
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": i} for i in range(5)])
    batch = await service.create(data, _spec())
    await service.pause(batch.id)
    late = await service.run(batch.id)
    assert (late.status, late.paused_reason) == ("paused", "user")
    assert late.progress is not None and late.progress.pending == 5
    assert model.calls == []
    await service.resume(batch.id)
    done = await service.run(batch.id)
    assert done.status == "succeeded" and len(model.calls) == 5


async def test_cancel_from_elsewhere_stops_the_executor(
    make_service: MakeService, tmp_path: Path
) -> None:
    started = asyncio.Event()

    async def slow(request: ChatRequest) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    service = make_service({"test:f": FunctionModel(slow)})
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": i} for i in range(20)])
    batch = await service.create(data, _spec(concurrency=4, lease_seconds=1.5))
    run = asyncio.create_task(service.run(batch.id))
    await asyncio.wait_for(started.wait(), 10)
    cancelled = await service.cancel(batch.id)
    assert cancelled.cancelled == 20
    final = await asyncio.wait_for(run, 10)  # the heartbeat saw it within a second
    assert final.status == "cancelled"
    items = [i async for i in service.iter_items(batch.id)]
    assert {i.status for i in items} == {"cancelled"}


async def test_pause_from_elsewhere_drains_in_flight_items(
    make_service: MakeService, tmp_path: Path
) -> None:
    gate, two_in_flight = asyncio.Event(), asyncio.Event()
    calls = 0

    async def held(request: ChatRequest) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            two_in_flight.set()
        await gate.wait()
        return "ok"

    service = make_service({"test:f": FunctionModel(held)})
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": i} for i in range(10)])
    batch = await service.create(data, _spec(concurrency=2, lease_seconds=1.5))
    async with service.open_client(batch.id) as client:
        executor = await service.executor(batch.id, client)
        run = asyncio.create_task(executor.run())
        await asyncio.wait_for(two_in_flight.wait(), 20)
        await service.pause(batch.id)
        async with asyncio.timeout(20):  # the heartbeat notices, however late under load
            while executor.stop_reason is None:  # noqa: ASYNC110 - set by the heartbeat
                await asyncio.sleep(0.02)
        assert executor.stop_reason == "paused"
        gate.set()
        final = await asyncio.wait_for(run, 20)
    assert (final.status, final.paused_reason) == ("paused", "user")
    assert final.progress is not None
    assert final.progress.succeeded == 2 and final.progress.pending == 8


async def test_an_expired_lease_is_reclaimed_and_the_dead_holder_is_fenced(
    make_service: MakeService, tmp_path: Path
) -> None:
    service = make_service({"test:f": FunctionModel(_echo)})
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": i} for i in range(6)])
    # The live executor's own leases (30 s) cannot run out however slowly it goes under
    # load (it would then claim its own items again and count a second attempt).
    batch = await service.create(data, _spec(lease_seconds=30))
    # An executor that claimed three items and died: its leases run out.
    dead = await service.repo.claim(batch.id, "dead-host:1:x", 3, 0.3)
    assert [c.item for c in dead] == [0, 1, 2]
    done = await service.run(batch.id)
    assert done.status == "succeeded" and done.progress is not None
    assert done.progress.succeeded == 6
    items = [i async for i in service.iter_items(batch.id)]
    assert [i.attempts for i in items] == [2, 2, 2, 1, 1, 1]
    assert not await service.repo.complete(batch.id, 0, "dead-host:1:x", status="failed")


async def test_items_held_by_dead_executors_too_often_fail(
    make_service: MakeService, tmp_path: Path
) -> None:
    service = make_service({"test:f": FunctionModel(_echo)})
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": 0}])
    batch = await service.create(data, _spec(max_attempts=1, lease_seconds=0.2))
    await service.repo.claim(batch.id, "dead", 1, 0.05)
    await asyncio.sleep(0.1)
    await service.run(batch.id)
    (item,) = [i async for i in service.iter_items(batch.id)]
    assert item.status == "failed"
    assert item.error == "gave up after 1 attempts: the executors holding it stopped"


async def test_a_finished_batch_is_returned_untouched(
    make_service: MakeService, tmp_path: Path
) -> None:
    service = make_service({"test:f": FunctionModel(_echo)})
    batch = await service.create(write_jsonl(tmp_path / "d.jsonl", [{"q": 1}]), _spec())
    await service.run(batch.id)
    async with service.open_client(batch.id) as client:
        executor = await service.executor(batch.id, client)
        assert isinstance(executor, LocalExecutor)
        record = await executor.run()
    assert record.status == "succeeded"
