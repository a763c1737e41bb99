"""/v1/usage: totals per key, agent, model and UTC day over a date range; non-admin keys
see only their own usage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from arbor.service.context import ServiceContext
from arbor.store import UsageRecord, UsageRepository

PROBLEM = "application/problem+json"


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


@pytest.fixture
async def reader(service_ctx: ServiceContext) -> tuple[str, str]:
    """(key, key id) of a read-only key."""
    new = await service_ctx.keys.create("reader", scopes=["read"])
    return new.key, new.record.id


@pytest.fixture
async def records(service_ctx: ServiceContext, reader: tuple[str, str]) -> None:
    reader_id = reader[1]
    rows = [
        # day 1: two calls for the reader's key, one failed
        UsageRecord(provider="openai", model="gpt-4o-mini", input_tokens=100, output_tokens=10,
                    cost_usd=0.01, key_id=reader_id, agent_id="agt_a", created_at=at(1)),
        UsageRecord(provider="openai", model="gpt-4o-mini", status="timeout",
                    key_id=reader_id, created_at=at(1, 23)),
        # day 2: another key, another model
        UsageRecord(provider="test", model="echo", input_tokens=50, output_tokens=5,
                    cost_usd=0.002, key_id="key_other", agent_id="agt_b", created_at=at(2, 0)),
        # day 3: no key at all (a CLI call)
        UsageRecord(provider="test", model="echo", input_tokens=7, output_tokens=1,
                    cached_input_tokens=7, created_at=at(3)),
    ]  # fmt: skip
    await UsageRepository(service_ctx.db).add_many(rows)


def groups(body: dict[str, Any]) -> dict[str | None, int]:
    return {g["group"]: g["requests"] for g in body["groups"]}


async def test_admin_sees_everything_grouped_each_way(
    http: httpx.AsyncClient, records: None, reader: tuple[str, str]
) -> None:
    by_model = (await http.get("/v1/usage", params={"group_by": "model"})).json()
    assert groups(by_model) == {"openai:gpt-4o-mini": 2, "test:echo": 2}
    assert by_model["totals"] == {
        "requests": 4,
        "errors": 1,
        "input_tokens": 157,
        "output_tokens": 16,
        "cached_input_tokens": 7,
        "cost_usd": pytest.approx(0.012),
    }
    by_key = (await http.get("/v1/usage", params={"group_by": "key"})).json()
    assert groups(by_key) == {reader[1]: 2, "key_other": 1, None: 1}
    by_agent = (await http.get("/v1/usage", params={"group_by": "agent"})).json()
    assert groups(by_agent) == {"agt_a": 1, "agt_b": 1, None: 2}
    by_day = (await http.get("/v1/usage")).json()  # day is the default
    assert by_day["group_by"] == "day"
    assert groups(by_day) == {"2026-11-01": 2, "2026-11-02": 1, "2026-11-03": 1}
    one_key = (await http.get("/v1/usage", params={"key_id": "key_other"})).json()
    assert groups(one_key) == {"2026-11-02": 1} and one_key["key_id"] == "key_other"


async def test_date_ranges(http: httpx.AsyncClient, records: None) -> None:
    # dates are whole UTC days, both ends included
    days = (await http.get("/v1/usage?since=2026-11-01&until=2026-11-02")).json()
    assert groups(days) == {"2026-11-01": 2, "2026-11-02": 1}
    assert days["since"] == "2026-11-01T00:00:00Z" and days["until"] == "2026-11-03T00:00:00Z"
    assert groups((await http.get("/v1/usage?since=2026-11-02")).json()) == {
        "2026-11-02": 1,
        "2026-11-03": 1,
    }
    # datetimes are half-open; no zone means UTC
    window = await http.get(
        "/v1/usage", params={"since": "2026-11-01T12:00:00", "until": "2026-11-02T00:00:00+00:00"}
    )
    assert groups(window.json()) == {"2026-11-01": 2}
    none = (await http.get("/v1/usage?since=2026-12-01")).json()
    assert none["groups"] == [] and none["totals"]["requests"] == 0


@pytest.mark.parametrize(
    "query",
    [
        "since=yesterday",
        "until=2026-13-01",
        "since=2026-11-03&until=2026-11-01",
        "group_by=week",
    ],
)
async def test_bad_filters_are_422(http: httpx.AsyncClient, query: str) -> None:
    response = await http.get(f"/v1/usage?{query}")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM


async def test_a_non_admin_key_sees_only_its_own_usage(
    make_http: Any, records: None, reader: tuple[str, str]
) -> None:
    client = make_http(reader[0])
    own = (await client.get("/v1/usage", params={"group_by": "key"})).json()
    assert own["key_id"] == reader[1] and groups(own) == {reader[1]: 2}
    explicit = await client.get("/v1/usage", params={"key_id": reader[1]})
    assert explicit.status_code == 200
    other = await client.get("/v1/usage", params={"key_id": "key_other"})
    assert other.status_code == 403 and other.headers["content-type"] == PROBLEM
    assert (await make_http().get("/v1/usage")).status_code == 401
