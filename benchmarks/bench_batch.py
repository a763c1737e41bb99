"""Batch benchmark: Arbor's batch engine vs peers under a quantized RPM limit, plus creation
time and memory of large batches. Usage::

    arbor bench batch --out benchmarks/results/batch.json [--quick]

Rate-limited makespan: N items against the mock upstream (a separate process) with 100 ms
latency and an RPM limit it enforces in 1-second windows (``rpm/60`` requests each; over →
429 with Retry-After). Side by side, one after another, the mock's counters reset between
them: Arbor (``BatchService``: items stored, paced under the limit, results written), the
``openai`` SDK with an ``asyncio.Semaphore``, LiteLLM's Router with ``rpm`` on the
deployment, and the ``openai`` SDK behind LangChain's ``InMemoryRateLimiter``. Reported:
makespan ÷ the ideal (N ÷ rate: the rate-limit bound), 429s the upstream sent, and items
that never succeeded.

Creation: a 100,000-row JSONL file stored as a batch (read, parsed, inserted, committed).
Memory: RSS growth of this process while a 100,000-item batch runs through an in-process
model double (no HTTP, so the figure is the engine's), from the first 5 % to the end.

Output follows the "Benchmark output" shape in INTERFACES.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

MODEL = "mock-1"


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _mock_call(url: str, path: str) -> dict[str, Any]:
    method = "POST" if path == "/_reset" else "GET"
    req = urllib.request.Request(url.removesuffix("/v1") + path, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        data: dict[str, Any] = json.loads(r.read())
    return data


def _prompt(i: int) -> str:
    return f"Summarise item {i} in one line."


def _write_dataset(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"q": f"item {i}", "n": i}) + "\n")
    return path


# ---- rate-limited makespan --------------------------------------------------------------


async def run_arbor(url: str, n: int, rpm: int, concurrency: int, work: Path) -> dict[str, Any]:
    from arbor.core.config import Settings
    from arbor.runtime import BatchService, BatchSpec
    from arbor.store import Database, migrate

    settings = Settings(
        home=work / "arbor-home",
        providers={"mock": {"base_url": url, "api_key": "sk-bench"}},  # type: ignore[dict-item]
        llm={"cache": {"enabled": False}},  # type: ignore[arg-type]
        log_level="warning",
    )
    db = Database(f"sqlite+aiosqlite:///{work / 'arbor-rate.db'}")
    await migrate(db)
    service = BatchService(db, settings)
    spec = BatchSpec.model_validate(
        {
            "kind": "template",
            "template": "Summarise {{ q }} in one line.",
            "model": f"mock:{MODEL}",
            "options": {"concurrency": concurrency, "rpm": rpm},
        }
    )
    batch = await service.create(_write_dataset(work / "rate.jsonl", n), spec)
    started = time.perf_counter()
    done = await service.run(batch.id)
    elapsed = time.perf_counter() - started
    await db.dispose()
    p = done.progress
    return {"makespan_s": elapsed, "unfinished": n - (p.succeeded if p else 0)}


async def _gated(n: int, concurrency: int, one: Callable[[int], Awaitable[bool]]) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    failed = 0

    async def item(i: int) -> None:
        nonlocal failed
        async with gate:
            if not await one(i):
                failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(item(i) for i in range(n)))
    return {"makespan_s": time.perf_counter() - started, "unfinished": failed}


async def run_openai_sdk(
    url: str, n: int, rpm: int, concurrency: int, work: Path
) -> dict[str, Any]:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="sk-bench")  # default: 2 retries

    async def one(i: int) -> bool:
        try:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": _prompt(i)}]
            )
        except openai.APIError:
            return False
        return True

    try:
        return await _gated(n, concurrency, one)
    finally:
        await client.close()


async def run_litellm(url: str, n: int, rpm: int, concurrency: int, work: Path) -> dict[str, Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    from litellm import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    router = Router(
        model_list=[
            {
                "model_name": "mock",
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": url,
                    "api_key": "sk-bench",
                    "rpm": rpm,
                },
            }
        ],
        num_retries=2,
    )

    async def one(i: int) -> bool:
        try:
            await router.acompletion(
                model="mock", messages=[{"role": "user", "content": _prompt(i)}]
            )
        except Exception:  # LiteLLM raises its own and openai's errors
            return False
        return True

    return await _gated(n, concurrency, one)


async def run_langchain(url: str, n: int, rpm: int, concurrency: int, work: Path) -> dict[str, Any]:
    import openai
    from langchain_core.rate_limiters import InMemoryRateLimiter

    limiter = InMemoryRateLimiter(
        requests_per_second=rpm / 60, check_every_n_seconds=0.01, max_bucket_size=1
    )
    client = openai.AsyncOpenAI(base_url=url, api_key="sk-bench")

    async def one(i: int) -> bool:
        await limiter.aacquire()
        try:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": _prompt(i)}]
            )
        except openai.APIError:
            return False
        return True

    try:
        return await _gated(n, concurrency, one)
    finally:
        await client.close()


RATE_CLIENTS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "arbor": run_arbor,
    "openai_sdk_semaphore": run_openai_sdk,
    "litellm_router_rpm": run_litellm,
    "langchain_inmemory_rate_limiter": run_langchain,
}


# ---- creation and memory ----------------------------------------------------------------


async def creation_and_memory(n_create: int, n_run: int, work: Path) -> dict[str, float]:
    from arbor.core.config import Settings
    from arbor.runtime import BatchService, BatchSpec
    from arbor.store import Database, migrate
    from arbor.testing import FunctionModel

    db = Database(f"sqlite+aiosqlite:///{work / 'arbor-big.db'}")
    await migrate(db)
    settings = Settings(
        home=work / "arbor-home",
        default_model="test:f",
        llm={"cache": {"enabled": False}},  # type: ignore[arg-type]
        log_level="warning",
    )
    model = FunctionModel(lambda r: "ok " + (r.messages[-1].content or "")[:20])
    service = BatchService(db, settings, models={"test:f": model})
    spec = BatchSpec.model_validate(
        {"kind": "template", "template": "Summarise {{ q }}.", "options": {"concurrency": 64}}
    )
    data = _write_dataset(work / "big.jsonl", n_create)
    started = time.perf_counter()
    created = await service.create(data, spec)
    create_s = time.perf_counter() - started
    assert created.total == n_create

    run_batch = created
    if n_run != n_create:
        run_batch = await service.create(_write_dataset(work / "run.jsonl", n_run), spec)
    model.calls = _Discard()  # the double would otherwise keep every request
    async with service.open_client(run_batch.id) as client:
        executor = await service.executor(run_batch.id, client)
        task = asyncio.create_task(executor.run())
        baseline = None
        peak = 0.0
        run_started = time.perf_counter()
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            rss = _rss_mb()
            peak = max(peak, rss)
            if baseline is None and executor.progress.done >= 0.05 * n_run:
                baseline = rss
        record = await task
        run_s = time.perf_counter() - run_started
    end = _rss_mb()
    await db.dispose()
    p = record.progress
    return {
        "create_items": n_create,
        "create_s": create_s,
        "run_items": n_run,
        "run_s": run_s,
        "run_items_per_s": n_run / run_s,
        "run_succeeded": float(p.succeeded if p else 0),
        "rss_baseline_mb": baseline or end,
        "rss_end_mb": end,
        "rss_peak_mb": peak,
        "rss_growth_mb": max(peak, end) - (baseline or end),
    }


class _Discard(list[Any]):
    """A list that forgets what is appended (FunctionModel records every call)."""

    def append(self, item: Any) -> None:
        return None


# ---- the run ----------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _target(name: str, value: float, op: str, limit: float) -> dict[str, Any]:
    met = value <= limit if op == "<=" else value >= limit
    return {"name": name, "value": round(value, 4), "op": op, "limit": limit, "met": met}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    from arbor.testing.mock_upstream import spawn_mock_upstream

    n, rpm = args.items, args.rpm
    ideal = n / (rpm / 60)
    clients: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="arbor-bench-batch-") as tmp:
        work = Path(tmp)
        with spawn_mock_upstream(rpm=rpm, latency_ms=100) as url:
            for name, fn in RATE_CLIENTS.items():
                if args.only and name not in args.only:
                    continue
                gc.collect()
                print(
                    f"bench batch: {name} ({n} items, rpm {rpm}) ...", file=sys.stderr, flush=True
                )
                _mock_call(url, "/_reset")
                figures = await fn(url, n, rpm, args.concurrency, work)
                stats = _mock_call(url, "/_stats")
                figures["requests"] = stats["requests"]
                figures["upstream_429s"] = stats["by_status"].get("429", 0)
                figures["makespan_vs_ideal"] = figures["makespan_s"] / ideal
                clients[name] = {
                    k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()
                }
        print("bench batch: creation and memory ...", file=sys.stderr, flush=True)
        big = await creation_and_memory(args.create_items, args.run_items, work)
    clients["arbor_scale"] = {k: round(v, 4) for k, v in big.items()}
    targets = []
    if "arbor" in clients:
        a = clients["arbor"]
        targets.append(_target("makespan_vs_ideal", a["makespan_vs_ideal"], "<=", 1.05))
        targets.append(_target("upstream_429s", a["upstream_429s"], "<=", 0))
    targets.append(_target(f"create_{args.create_items}_items_s", big["create_s"], "<=", 5.0))
    targets.append(_target(f"rss_growth_{args.run_items}_items_mb", big["rss_growth_mb"], "<=", 50))
    return {
        "bench": "batch",
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {d: _version(d) for d in ("arbor", "openai", "litellm", "langchain-core")},
        "settings": {
            "items": n,
            "rpm": rpm,
            "latency_ms": 100,
            "concurrency": args.concurrency,
            "ideal_makespan_s": round(ideal, 3),
            "create_items": args.create_items,
            "run_items": args.run_items,
        },
        "clients": clients,
        "targets": targets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="Small sizes (a smoke run).")
    parser.add_argument("--items", type=int, default=None, help="Items per rate-limited client.")
    parser.add_argument("--rpm", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--create-items", type=int, default=None)
    parser.add_argument("--run-items", type=int, default=None)
    parser.add_argument("--only", nargs="*", choices=sorted(RATE_CLIENTS))
    args = parser.parse_args()
    quick = args.quick
    args.items = args.items or (300 if quick else 10_000)
    args.rpm = args.rpm or 3000  # 50 requests/s: a rate this 2-core machine can drive
    args.create_items = args.create_items or (10_000 if quick else 100_000)
    args.run_items = args.run_items or (2_000 if quick else 100_000)
    result = asyncio.run(_main(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for t in result["targets"]:
        mark = "met" if t["met"] else "MISSED"
        print(f"{t['name']:32s} {t['value']:>10} {t['op']} {t['limit']:<6} {mark}")


if __name__ == "__main__":
    main()
