from __future__ import annotations

import math
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import IntegrityError

from arbor.store import Database, UsageRecord, UsageRepository, UsageSummaryRow
from arbor.store.tables import UsageRow

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rec(**kw: object) -> UsageRecord:
    values: dict[str, object] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_usd": 0.001,
        "created_at": T0,
    }
    values.update(kw)
    return UsageRecord(**values)  # type: ignore[arg-type]


def test_record_fields_are_the_table_columns() -> None:
    assert {f.name for f in fields(UsageRecord)} == set(UsageRow.__table__.columns.keys())


def test_record_defaults_and_validation() -> None:
    r = UsageRecord(provider="local", model="smollm2")
    assert r.id.startswith("use_") and r.ok
    assert r.created_at.tzinfo is UTC
    assert UsageRecord(provider="p", model="m").id != r.id
    eastern = timezone(timedelta(hours=-5))
    assert rec(created_at=datetime(2026, 3, 1, 7, tzinfo=eastern)).created_at == T0
    assert rec(created_at=T0).created_at.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        rec(created_at=datetime(2026, 3, 1))


async def test_add_and_read_back_exactly(db: Database) -> None:
    repo = UsageRepository(db)
    record = rec(
        cost_usd=0.1 + 0.2,  # 0.30000000000000004: a float that is not a short decimal
        latency_ms=12.345678901234,
        cached_input_tokens=40,
        status="rate_limited",
        cached=True,
        estimated=True,
        key_id="key_1",
        agent_id="agent_1",
        run_id="run_1",
        batch_id="bat_1",
        request_id="chatcmpl-abc",
        created_at=datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
    )
    await repo.add(record)
    [back] = await repo.records()
    assert back == record
    assert back.cost_usd == 0.30000000000000004
    assert back.created_at.tzinfo is UTC


async def test_tiny_and_large_costs_round_trip(db: Database) -> None:
    repo = UsageRepository(db)
    costs = [1.5e-9, 2.0 / 3.0, 12345.678901234567]
    await repo.add_many([rec(cost_usd=c, run_id=f"run_{i}") for i, c in enumerate(costs)])
    for i, c in enumerate(costs):
        [back] = await repo.records(run_id=f"run_{i}")
        assert back.cost_usd == c
    assert math.isclose(await repo.total_cost(), math.fsum(costs), rel_tol=1e-15)


async def test_records_newest_first_with_filters_and_limit(db: Database) -> None:
    repo = UsageRepository(db)
    await repo.add_many(
        rec(created_at=T0 + timedelta(minutes=i), key_id="k1" if i % 2 else "k2") for i in range(5)
    )
    newest = await repo.records(limit=2)
    assert [r.created_at for r in newest] == [T0 + timedelta(minutes=4), T0 + timedelta(minutes=3)]
    assert {r.key_id for r in await repo.records(key_id="k1")} == {"k1"}
    assert len(await repo.records(key_id="k1")) == 2


async def test_add_many_is_one_transaction(db: Database) -> None:
    repo = UsageRepository(db)
    await repo.add_many([])  # nothing to do, no error
    first = rec()
    await repo.add(first)
    with pytest.raises(IntegrityError):
        await repo.add_many([rec(), rec(), rec(id=first.id)])  # the last one collides
    assert len(await repo.records()) == 1


async def test_naive_time_filters_are_refused(db: Database) -> None:
    repo = UsageRepository(db)
    with pytest.raises(ValueError, match="since must be a timezone-aware"):
        await repo.total_cost(since=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="until must be a timezone-aware"):
        await repo.summary("day", until=datetime(2026, 1, 1))


@pytest.fixture
async def filled(db: Database) -> UsageRepository:
    """Two days of calls by two keys, two agents and two models, plus anonymous ones."""
    repo = UsageRepository(db)
    day2 = T0 + timedelta(days=1)
    await repo.add_many(
        [
            rec(key_id="k1", agent_id="a1", run_id="r1", cost_usd=0.25),
            rec(key_id="k1", agent_id="a1", run_id="r1", cost_usd=0.5, output_tokens=20),
            rec(
                key_id="k1",
                agent_id="a2",
                run_id="r2",
                status="timeout",
                cost_usd=0.0,
                input_tokens=0,
                output_tokens=0,
            ),
            rec(
                key_id="k2",
                agent_id="a2",
                batch_id="b1",
                model="gpt-4o",
                cost_usd=1.0,
                cached_input_tokens=60,
                created_at=day2,
            ),
            rec(
                key_id="k2",
                batch_id="b1",
                model="gpt-4o",
                cost_usd=2.0,
                created_at=day2,
                status="rate_limited",
            ),
            rec(provider="local", model="smollm2", cost_usd=0.0, created_at=day2),
        ]
    )
    return repo


async def test_summary_by_key(filled: UsageRepository) -> None:
    assert await filled.summary("key") == [
        UsageSummaryRow(
            "k1",
            requests=3,
            errors=1,
            input_tokens=200,
            output_tokens=30,
            cached_input_tokens=0,
            cost_usd=0.75,
        ),
        UsageSummaryRow(
            "k2",
            requests=2,
            errors=1,
            input_tokens=200,
            output_tokens=20,
            cached_input_tokens=60,
            cost_usd=3.0,
        ),
        UsageSummaryRow(
            None,
            requests=1,
            errors=0,
            input_tokens=100,
            output_tokens=10,
            cached_input_tokens=0,
            cost_usd=0.0,
        ),
    ]


async def test_summary_by_agent(filled: UsageRepository) -> None:
    rows = await filled.summary("agent")
    assert [(r.group, r.requests, r.errors, r.cost_usd) for r in rows] == [
        ("a1", 2, 0, 0.75),
        ("a2", 2, 1, 1.0),
        (None, 2, 1, 2.0),
    ]


async def test_summary_by_model(filled: UsageRepository) -> None:
    rows = await filled.summary("model")
    assert [(r.group, r.requests, r.cost_usd) for r in rows] == [
        ("local:smollm2", 1, 0.0),
        ("openai:gpt-4o", 2, 3.0),
        ("openai:gpt-4o-mini", 3, 0.75),
    ]


async def test_summary_by_day(filled: UsageRepository) -> None:
    rows = await filled.summary("day")
    assert [(r.group, r.requests, r.errors, r.cost_usd) for r in rows] == [
        ("2026-03-01", 3, 1, 0.75),
        ("2026-03-02", 3, 1, 3.0),
    ]


async def test_days_are_utc_days(db: Database) -> None:
    """23:30 in New York on 1 March is 04:30 UTC on 2 March."""
    repo = UsageRepository(db)
    new_york = timezone(timedelta(hours=-5))
    await repo.add_many(
        [
            rec(created_at=datetime(2026, 3, 1, 23, 30, tzinfo=new_york)),
            rec(created_at=datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)),
            rec(created_at=datetime(2026, 3, 2, 0, 0, tzinfo=UTC)),
        ]
    )
    rows = await repo.summary("day")
    assert [(r.group, r.requests) for r in rows] == [("2026-03-01", 1), ("2026-03-02", 2)]


async def test_summary_filters(filled: UsageRepository) -> None:
    day2 = T0 + timedelta(days=1)
    assert [r.group for r in await filled.summary("day", since=day2)] == ["2026-03-02"]
    assert [r.group for r in await filled.summary("day", until=day2)] == ["2026-03-01"]
    assert await filled.summary("day", since=day2, until=day2) == []
    by_model = await filled.summary("model", key_id="k2")
    assert [(r.group, r.requests) for r in by_model] == [("openai:gpt-4o", 2)]
    assert await filled.summary("key", key_id="nobody") == []


async def test_summary_rejects_unknown_grouping(filled: UsageRepository) -> None:
    with pytest.raises(ValueError, match="group_by"):
        await filled.summary("week")  # type: ignore[arg-type]


async def test_total_cost_filters(filled: UsageRepository) -> None:
    day2 = T0 + timedelta(days=1)
    assert await filled.total_cost() == 3.75
    assert await filled.total_cost(key_id="k1") == 0.75
    assert await filled.total_cost(key_id="k2") == 3.0
    assert await filled.total_cost(run_id="r1") == 0.75
    assert await filled.total_cost(run_id="r2") == 0.0
    assert await filled.total_cost(batch_id="b1") == 3.0
    assert await filled.total_cost(key_id="k1", run_id="r1") == 0.75
    assert await filled.total_cost(key_id="k1", batch_id="b1") == 0.0
    assert await filled.total_cost(since=day2) == 3.0
    assert await filled.total_cost(until=day2) == 0.75
    assert await filled.total_cost(key_id="nobody") == 0.0
    assert isinstance(await filled.total_cost(key_id="nobody"), float)
