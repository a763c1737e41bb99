"""What Arbor's HTTP stack adds per request, in process (ASGI calls, no sockets).

Side by side, one process, same trivial endpoint:

- ``bare``: a plain FastAPI app with the same routers (so route matching costs the same);
- ``middleware``: the Arbor app (request id, metrics, body limit, problem handlers), no key;
- ``keyed``: the Arbor app with a ``run``-scope API key checked against the store on every
  request (the default; on SQLite a direct ``sqlite3`` read);
- ``keyed_cached``: the same with ``service.key_cache_seconds = 1`` (the key trusted for 1 s).

Usage: ``python benchmarks/bench_service_stack.py [--requests N]``; prints JSON (p50 in µs and
the ratios to ``bare``). The gateway's end-to-end added latency is ``arbor bench gateway``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI

from arbor.core.config import load_settings
from arbor.service.app import create_app
from arbor.service.context import open_context
from arbor.service.deps import RunKey
from arbor.service.routes import ROUTERS


async def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


async def _p50_us(app: Any, path: str, headers: list[tuple[bytes, bytes]], n: int) -> float:
    for _ in range(min(200, n)):
        await _call(app, path, headers)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        status = await _call(app, path, headers)
        times.append(time.perf_counter() - t)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
    return statistics.median(times) * 1e6


def _routes() -> APIRouter:
    router = APIRouter()

    @router.get("/plain")
    async def plain() -> dict[str, str]:
        return {"ok": "1"}

    @router.get("/keyed")
    async def keyed(_key: RunKey) -> dict[str, str]:
        return {"ok": "1"}

    return router


async def run(requests: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="arbor-bench-"))
    results: dict[str, float] = {}
    for cache in (0.0, 1.0):
        settings = load_settings(
            home=home,
            database_url=f"sqlite+aiosqlite:///{home / 'bench.db'}",
            default_model="test:x",
            service={"key_cache_seconds": cache},
        )
        ctx = await open_context(settings)
        try:
            key = (await ctx.keys.create("bench", scopes=["run"])).key
            app = create_app(ctx)
            app.include_router(_routes())
            host = [(b"host", b"bench")]
            keyed = [*host, (b"authorization", f"Bearer {key}".encode())]
            if not cache:
                bare = FastAPI()
                for router in ROUTERS:
                    bare.include_router(router)
                bare.include_router(_routes())
                results["bare"] = await _p50_us(bare, "/plain", host, requests)
                results["middleware"] = await _p50_us(app, "/plain", host, requests)
                results["keyed"] = await _p50_us(app, "/keyed", keyed, requests)
            else:
                results["keyed_cached"] = await _p50_us(app, "/keyed", keyed, requests)
        finally:
            await ctx.aclose()
    base = results["bare"]
    return {
        "bench": "service_stack",
        "p50_us": {k: round(v, 1) for k, v in results.items()},
        "added_p50_us": {k: round(v - base, 1) for k, v in results.items() if k != "bare"},
        "ratio_to_bare": {k: round(v / base, 2) for k, v in results.items() if k != "bare"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.requests)), indent=2))


if __name__ == "__main__":
    main()
