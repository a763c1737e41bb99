"""How many requests/s the mock upstream serves on one core, so a benchmark knows its ceiling.

The server runs in its own process (one core, as benchmarks use it); a concurrent aiohttp
client hammers it for a few seconds per scenario and the script prints JSON::

    .venv/bin/python tests/testing/mock_upstream_throughput.py [--seconds 3] [--concurrency 64]

Not collected by pytest (no ``test_`` prefix); ``test_mock_upstream.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp

from arbor.testing.mock_upstream import spawn_mock_upstream

CHAT = {"model": "mock-1", "messages": [{"role": "user", "content": "Say something short."}]}
SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/chat/completions", CHAT),
    "chat_stream_8_chunks": ("/chat/completions", CHAT | {"stream": True}),
    "embeddings": ("/embeddings", {"model": "mock-embedding", "input": "hello world"}),
}


async def measure(
    base_url: str, path: str, payload: dict[str, Any], seconds: float, concurrency: int
) -> dict[str, float]:
    """Requests/s and failures of ``concurrency`` workers posting ``payload`` for ``seconds``."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    done = failed = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, failed
            while time.perf_counter() < deadline:
                async with session.post(base_url + path, data=body, headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        done += 1
                    else:
                        failed += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"requests_per_s": round(done / elapsed, 1), "failed": failed}


async def _main(seconds: float, concurrency: int) -> dict[str, Any]:
    results: dict[str, Any] = {"seconds": seconds, "concurrency": concurrency}
    with spawn_mock_upstream() as url:
        for name, (path, payload) in SCENARIOS.items():
            results[name] = await measure(url, path, payload, seconds, concurrency)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(args.seconds, args.concurrency)), indent=2))


if __name__ == "__main__":
    main()
