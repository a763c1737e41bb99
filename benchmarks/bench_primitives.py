"""Why Arbor writes its own retry loop: the success-path cost of ``RetryPolicy.run`` next to
``tenacity.AsyncRetrying`` configured the same way (4 attempts, full-jitter exponential
backoff, the same retriable predicate), plus the other per-call primitives' fast paths.

    arbor bench primitives --out benchmarks/results/primitives.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from arbor.core.clock import SystemClock
from arbor.core.config import BreakerSettings, ModelLimits, RetrySettings
from arbor.llm.breaker import BreakerRegistry
from arbor.llm.budgets import BudgetTracker
from arbor.llm.ratelimit import InMemoryRateLimiter
from arbor.llm.retry import RetryPolicy


async def _ok() -> int:
    return 1


async def _per_call_us(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(min(1000, n)):
        await fn()
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n * 1e6


async def _main(n: int) -> dict[str, Any]:
    import tenacity

    clock = SystemClock()
    policy = RetryPolicy(RetrySettings(), clock, random.Random(1))
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=20),
        retry=tenacity.retry_if_exception(RetryPolicy.is_retriable),
        reraise=True,
    )
    breakers = BreakerRegistry(BreakerSettings(), clock)
    limiter = InMemoryRateLimiter(clock)
    limits = ModelLimits(rpm=10**9, tpm=10**12)
    budgets = BudgetTracker({"global": 10**9})

    async def limiter_call() -> None:
        lease = await limiter.acquire("m", limits, 100)
        await limiter.reconcile(lease, 90)

    async def breaker_call() -> None:
        breakers.before_call("m")
        breakers.record_success("m")

    async def budget_call() -> None:
        budgets.commit(budgets.reserve(["global"], 0.001), 0.0009)

    results = {
        "retry_run_us": await _per_call_us(lambda: policy.run(_ok), n),
        "tenacity_us": await _per_call_us(lambda: retrying(_ok), n),
        "breaker_closed_us": await _per_call_us(breaker_call, n),
        "limiter_acquire_reconcile_us": await _per_call_us(limiter_call, n),
        "budget_reserve_commit_us": await _per_call_us(budget_call, n),
    }
    ratio = results["tenacity_us"] / results["retry_run_us"]
    return {
        "bench": "primitives",
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {"tenacity": getattr(tenacity, "__version__", "installed")},
        "clients": {"arbor": {k: round(v, 3) for k, v in results.items()}},
        "targets": [
            {
                "name": "tenacity_vs_retry_run",
                "value": round(ratio, 2),
                "op": ">=",
                "limit": 2.0,
                "met": ratio >= 2.0,
            },
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(_main(2_000 if args.quick else 50_000))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["clients"]["arbor"], indent=2))


if __name__ == "__main__":
    main()
