from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbor.core.errors import BudgetExceededError
from arbor.llm.budgets import BudgetTracker


def test_reserve_commit_and_spent() -> None:
    budgets = BudgetTracker({"global": 1.0, "key:a": 0.5})
    r = budgets.reserve(["global", "key:a"], 0.2)
    assert budgets.reserved("key:a") == pytest.approx(0.2)
    assert budgets.remaining("key:a") == pytest.approx(0.3)
    budgets.commit(r, 0.05)
    assert budgets.spent("global") == pytest.approx(0.05)
    assert budgets.spent("key:a") == pytest.approx(0.05)
    assert budgets.reserved("global") == 0.0
    assert budgets.remaining("global") == pytest.approx(0.95)


def test_reservation_that_would_pass_a_limit_is_refused_and_holds_nothing() -> None:
    budgets = BudgetTracker({"global": 10.0, "run:r1": 1.0})
    held = budgets.reserve(["global", "run:r1"], 0.6)
    with pytest.raises(BudgetExceededError) as info:
        budgets.reserve(["global", "run:r1"], 0.5)
    assert info.value.scope == "run:r1"
    assert info.value.limit_usd == 1.0
    assert "run:r1" in str(info.value)
    assert budgets.reserved("global") == pytest.approx(0.6)  # the refused call took nothing
    budgets.release(held)
    budgets.reserve(["global", "run:r1"], 1.0)  # exactly the limit is allowed


def test_spent_plus_reserved_plus_estimate_is_what_counts() -> None:
    budgets = BudgetTracker({"batch:b": 1.0})
    r1 = budgets.reserve(["batch:b"], 0.4)
    budgets.commit(r1, 0.5)  # cost more than estimated
    r2 = budgets.reserve(["batch:b"], 0.3)
    with pytest.raises(BudgetExceededError):
        budgets.reserve(["batch:b"], 0.21)
    budgets.release(r2)
    budgets.reserve(["batch:b"], 0.5)


def test_overspending_is_recorded_and_then_blocks() -> None:
    budgets = BudgetTracker({"global": 1.0})
    r = budgets.reserve(["global"], 0.5)
    budgets.commit(r, 1.5)
    assert budgets.spent("global") == 1.5
    assert budgets.remaining("global") == 0.0
    with pytest.raises(BudgetExceededError):
        budgets.reserve(["global"], 0.0001)


def test_sums_are_exact() -> None:
    budgets = BudgetTracker({"global": 0.3})
    for _ in range(3):
        budgets.commit(budgets.reserve(["global"], 0.1), 0.1)
    assert budgets.spent("global") == 0.3
    budgets.reserve(["global"], 0.0)  # 0.1 + 0.1 + 0.1 did not drift past 0.3


def test_commit_and_release_are_idempotent() -> None:
    budgets = BudgetTracker({"global": 1.0})
    r = budgets.reserve(["global"], 0.5)
    budgets.commit(r, 0.2)
    budgets.commit(r, 0.2)
    budgets.release(r)
    assert budgets.spent("global") == pytest.approx(0.2)
    assert budgets.reserved("global") == 0.0


def test_unlimited_scopes_are_accounted_but_never_refuse() -> None:
    budgets = BudgetTracker()
    assert not budgets.has_limits(["global", "key:a"])
    r = budgets.reserve(["global", "key:a", "key:a"], 1_000.0)
    budgets.commit(r, 3.0)
    assert budgets.spent("key:a") == 3.0  # listed twice, charged once
    assert budgets.remaining("key:a") is None and budgets.limit("key:a") is None


def test_seeded_spending_and_changed_limits() -> None:
    budgets = BudgetTracker({"key:a": 5.0}, spent={"key:a": 4.5})
    assert budgets.has_limits(["global", "key:a"])
    with pytest.raises(BudgetExceededError):
        budgets.reserve(["key:a"], 1.0)
    budgets.set_limit("key:a", 10.0)
    budgets.reserve(["key:a"], 1.0)
    budgets.set_limit("key:a", None)
    assert not budgets.has_limits(["key:a"])
    with pytest.raises(ValueError):
        budgets.set_limit("key:a", -1.0)
    with pytest.raises(ValueError):
        budgets.reserve(["key:a"], -0.1)


@given(st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=60))
def test_holds_never_exceed_the_limit(estimates: list[float]) -> None:
    budgets = BudgetTracker({"global": 2.0})
    for estimate in estimates:
        try:
            budgets.reserve(["global"], estimate)
        except BudgetExceededError:
            pass
        assert budgets.reserved("global") <= 2.0 + 1e-9


def test_threads_cannot_jointly_overshoot() -> None:
    budgets = BudgetTracker({"global": 10.0})
    granted: list[int] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(500):
            try:
                budgets.commit(budgets.reserve(["global"], 0.01), 0.01)
                granted.append(1)
            except BudgetExceededError:
                return

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 1000
    assert budgets.spent("global") == 10.0


async def test_concurrent_tasks_cannot_jointly_overshoot() -> None:
    budgets = BudgetTracker({"run:r": 1.0})

    async def call() -> bool:
        try:
            r = budgets.reserve(["run:r"], 0.3)
        except BudgetExceededError:
            return False
        await asyncio.sleep(0)
        budgets.commit(r, 0.3)
        return True

    results = await asyncio.gather(*(call() for _ in range(10)))
    assert sum(results) == 3
    assert budgets.spent("run:r") == pytest.approx(0.9)
