"""LLM client benchmark: Arbor vs the openai SDK, LiteLLM and LangChain, side by side.

All clients run in this one process against the same mock upstream (a separate process, so
its CPU is not counted), one after another, with the same prompts. Usage::

    arbor bench llm --out benchmarks/results/llm.json [--quick]

Output follows the "Benchmark output" shape in INTERFACES.md; targets are ratios from this run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

MODEL = "mock-1"
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name three prime numbers and explain why they are prime."},
]
Call = Callable[[], Awaitable[Any]]


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _sequential(call: Call, n: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        await call()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        times.append((time.perf_counter() - t) * 1000)
    return {"seq_p50_ms": _pct(times, 50), "seq_p99_ms": _pct(times, 99)}


async def _throughput(call: Call, total: int, concurrency: int) -> dict[str, float]:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    for _ in range(concurrency):  # warm the pool
        await call()
    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t
    return {f"throughput_c{concurrency}_rps": total / elapsed}


async def _streaming(stream: Callable[[], Any], n: int) -> dict[str, float]:
    """``stream()`` returns an async iterator of chunks; counts TTFT and CPU per chunk."""
    ttfts, chunks = [], 0
    cpu0 = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        first = True
        async for _chunk in stream():
            if first:
                ttfts.append((time.perf_counter() - t) * 1000)
                first = False
            chunks += 1
    cpu = time.process_time() - cpu0
    return {
        "stream_ttft_p50_ms": _pct(ttfts, 50),
        "stream_cpu_us_per_chunk": cpu / max(1, chunks) * 1e6,
        "stream_chunks_per_call": chunks / n,
    }


# ---- the clients -----------------------------------------------------------------------
async def bench_arbor(url: str, n: dict[str, int]) -> dict[str, float]:
    from arbor.core.config import ProviderSettings, Settings
    from arbor.llm.client import LLMClient
    from arbor.llm.types import ChatRequest, Message

    settings = Settings(
        providers={"mock": ProviderSettings(base_url=url, api_key="sk-bench")},
        llm={"cache": {"enabled": False}},
    )
    msgs = [Message(**m) for m in MESSAGES]  # type: ignore[arg-type]
    results: dict[str, float] = {}
    async with LLMClient(settings) as client:

        async def call() -> Any:
            return await client.complete(ChatRequest(model=f"mock:{MODEL}", messages=msgs))

        def stream() -> Any:
            return client.stream(ChatRequest(model=f"mock:{MODEL}", messages=msgs))

        results |= await _sequential(call, n["seq"], n["warmup"])
        results |= await _throughput(call, n["tp"], 50)
        results |= await _streaming(stream, n["stream"])

    cached = settings.model_copy(
        update={
            "llm": settings.llm.model_copy(
                update={
                    "cache": settings.llm.cache.model_copy(update={"enabled": True, "disk": False})
                }
            )
        }
    )
    async with LLMClient(cached) as client:
        req = ChatRequest(model=f"mock:{MODEL}", messages=msgs, temperature=0)
        await client.complete(req)
        times = []
        for _ in range(n["cache"]):
            t = time.perf_counter()
            r = await client.complete(
                ChatRequest(model=f"mock:{MODEL}", messages=msgs, temperature=0)
            )
            times.append((time.perf_counter() - t) * 1e6)
            assert r.cached
        results["cache_hit_p50_us"] = _pct(times, 50)
        results["cache_hit_p99_us"] = _pct(times, 99)
    return results


async def bench_openai_sdk(url: str, n: dict[str, int]) -> dict[str, float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="sk-bench", max_retries=0)
    results: dict[str, float] = {}

    async def call() -> Any:
        return await client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]

    async def stream() -> Any:
        s = await client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        async for chunk in s:
            yield chunk

    results |= await _sequential(call, n["seq"], n["warmup"])
    results |= await _throughput(call, n["tp"], 50)
    results |= await _streaming(stream, n["stream"])
    await client.close()
    return results


async def bench_litellm(url: str, n: dict[str, int]) -> dict[str, float]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    results: dict[str, float] = {}

    async def call() -> Any:
        return await litellm.acompletion(
            model=f"openai/{MODEL}",
            api_base=url,
            api_key="sk-bench",
            messages=MESSAGES,
            num_retries=0,
        )

    async def stream() -> Any:
        s = await litellm.acompletion(
            model=f"openai/{MODEL}",
            api_base=url,
            api_key="sk-bench",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            num_retries=0,
        )
        async for chunk in s:
            yield chunk

    results |= await _sequential(call, n["seq"], n["warmup"])
    results |= await _throughput(call, n["tp"], 50)
    results |= await _streaming(stream, n["stream"])
    return results


async def bench_langchain(url: str, n: dict[str, int]) -> dict[str, float]:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=MODEL, base_url=url, api_key="sk-bench", max_retries=0, stream_usage=True
    )
    msgs = [(m["role"], m["content"]) for m in MESSAGES]
    results: dict[str, float] = {}

    async def call() -> Any:
        return await llm.ainvoke(msgs)

    def stream() -> Any:
        return llm.astream(msgs)

    results |= await _sequential(call, n["seq"], n["warmup"])
    results |= await _throughput(call, n["tp"], 50)
    results |= await _streaming(stream, n["stream"])
    return results


CLIENTS: dict[str, Callable[[str, dict[str, int]], Awaitable[dict[str, float]]]] = {
    "arbor": bench_arbor,
    "openai_sdk": bench_openai_sdk,
    "litellm": bench_litellm,
    "langchain": bench_langchain,
}


def _targets(c: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    a, sdk = c["arbor"], c["openai_sdk"]
    lite = c.get("litellm", {})
    tp = "throughput_c50_rps"
    rows = [
        ("seq_p50_vs_openai_sdk", a["seq_p50_ms"] / sdk["seq_p50_ms"], "<=", 1.10),
        ("throughput_c50_vs_openai_sdk", a[tp] / sdk[tp], ">=", 1.5),
        (
            "stream_ttft_added_ms_vs_openai_sdk",
            a["stream_ttft_p50_ms"] - sdk["stream_ttft_p50_ms"],
            "<=",
            1.0,
        ),
        ("stream_cpu_us_per_chunk", a["stream_cpu_us_per_chunk"], "<=", 50.0),
        ("cache_hit_p99_us", a["cache_hit_p99_us"], "<=", 50.0),
    ]
    if lite:
        rows.insert(1, ("seq_p50_vs_litellm", a["seq_p50_ms"] / lite["seq_p50_ms"], "<=", 0.40))
        rows.insert(3, ("throughput_c50_vs_litellm", a[tp] / lite[tp], ">=", 2.5))
    out = []
    for name, value, op, limit in rows:
        met = value <= limit if op == "<=" else value >= limit
        out.append({"name": name, "value": round(value, 4), "op": op, "limit": limit, "met": met})
    return out


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


async def _main(out: Path, quick: bool, only: list[str] | None) -> dict[str, Any]:
    from arbor.testing.mock_upstream import spawn_mock_upstream

    n = (
        {"warmup": 10, "seq": 50, "tp": 300, "stream": 20, "cache": 500}
        if quick
        else {"warmup": 100, "seq": 1000, "tp": 5000, "stream": 300, "cache": 10000}
    )
    clients: dict[str, dict[str, float]] = {}
    with spawn_mock_upstream(chunks=16) as url:
        for name, fn in CLIENTS.items():
            if only and name not in only:
                continue
            gc.collect()
            print(f"bench llm: {name} ...", file=sys.stderr, flush=True)
            clients[name] = {k: round(v, 4) for k, v in (await fn(url, n)).items()}
    result = {
        "bench": "llm",
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {d: _version(d) for d in ("arbor", "openai", "litellm", "langchain-openai")},
        "settings": n,
        "clients": clients,
        "targets": _targets(clients) if {"arbor", "openai_sdk"} <= clients.keys() else [],
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", choices=sorted(CLIENTS))
    args = parser.parse_args()
    result = asyncio.run(_main(args.out, args.quick, args.only))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for t in result["targets"]:
        mark = "met" if t["met"] else "MISSED"
        print(f"{t['name']:40s} {t['value']:>10} {t['op']} {t['limit']:<6} {mark}")


if __name__ == "__main__":
    main()
