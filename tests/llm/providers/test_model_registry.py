"""ModelRegistry: model ids → cached models, from settings only."""

from __future__ import annotations

import subprocess
import sys

import pytest
from aiohttp import web
from upstream_server import Upstream, completion

from arbor.core.config import Settings
from arbor.core.errors import ConfigError, UnknownModelError
from arbor.llm.model import Model
from arbor.llm.providers.local import LocalGGUFModel
from arbor.llm.providers.openai import OpenAICompatibleModel
from arbor.llm.providers.registry import ModelRegistry
from arbor.llm.types import ChatRequest, Message
from arbor.testing import FunctionModel


def settings(**kw: object) -> Settings:
    return Settings(**kw)  # type: ignore[arg-type]


async def test_local_models_use_llm_settings() -> None:
    registry = ModelRegistry(settings(llm={"local_threads": 3, "local_context": 4096}))
    model = registry.get("local:smollm2")
    assert isinstance(model, LocalGGUFModel)
    assert (model.n_threads, model.n_ctx, model.path.suffix) == (3, 4096, ".gguf")
    assert registry.get("local:smollm2") is model  # cached
    await registry.aclose()


async def test_openai_and_named_providers(upstream: Upstream) -> None:
    upstream.handler = _ok
    registry = ModelRegistry(
        settings(
            openai_base_url=upstream.url,
            openai_api_key="sk-openai",
            providers={"ollama": {"base_url": upstream.url}},
        )
    )
    gpt = registry.get("openai:gpt-4o-mini")
    llama = registry.get("ollama:llama3.1:8b")  # the model name may contain ':'
    assert isinstance(gpt, OpenAICompatibleModel) and isinstance(llama, OpenAICompatibleModel)
    assert (gpt.provider, gpt.name, llama.provider, llama.name) == (
        "openai",
        "gpt-4o-mini",
        "ollama",
        "llama3.1:8b",
    )
    assert registry.get("openai:gpt-4o") is not gpt
    await gpt.complete(_req())
    await llama.complete(_req())
    assert [r["model"] for r in upstream.requests] == ["gpt-4o-mini", "llama3.1:8b"]
    assert upstream.headers[0]["authorization"] == "Bearer sk-openai"
    assert upstream.headers[1]["authorization"] == "Bearer unused"
    await registry.aclose()


async def test_models_of_one_provider_share_a_connection_pool(upstream: Upstream) -> None:
    registry = ModelRegistry(settings(providers={"up": {"base_url": upstream.url}}))
    a, b = registry.get("up:a"), registry.get("up:b")
    assert isinstance(a, OpenAICompatibleModel) and isinstance(b, OpenAICompatibleModel)
    assert a.client is b.client
    await registry.aclose()


@pytest.mark.parametrize("model_id", ["nope:gpt-4o", "gpt-4o", ":x", "openai:"])
def test_unknown_ids_name_the_known_providers(model_id: str) -> None:
    registry = ModelRegistry(settings(providers={"ollama": {"base_url": "http://127.0.0.1:1"}}))
    with pytest.raises(UnknownModelError) as err:
        registry.get(model_id)
    assert "local" in str(err.value) and "ollama" in str(err.value) and "openai" in str(err.value)


def test_unknown_local_model() -> None:
    with pytest.raises(UnknownModelError, match="smollm2"):
        ModelRegistry(settings()).get("local:mystery")


def test_real_openai_needs_a_key() -> None:
    with pytest.raises(ConfigError) as err:
        ModelRegistry(settings()).get("openai:gpt-4o")
    assert err.value.variable == "ARBOR_OPENAI_API_KEY"


async def test_registered_factories_win_and_are_closed() -> None:
    closed: list[str] = []

    class Double(FunctionModel):
        async def aclose(self) -> None:
            closed.append(self.name)

    registry = ModelRegistry(settings())
    registry.register("openai", lambda name: Double(lambda req: f"fake {name}", name=name))
    registry.register("test", lambda name: Double(lambda req: "t", name=name))
    model = registry.get("openai:gpt-4o")
    assert isinstance(model, Model)
    assert (await model.complete(_req())).text == "fake gpt-4o"
    registry.get("test:x")
    assert "test" in registry.providers
    await registry.aclose()
    assert sorted(closed) == ["gpt-4o", "x"]


async def test_two_registries_are_independent(upstream: Upstream) -> None:
    s = settings(providers={"up": {"base_url": upstream.url}})
    one, two = ModelRegistry(s), ModelRegistry(s)
    assert one.get("up:m") is not two.get("up:m")
    await one.aclose()
    await two.aclose()


def test_building_a_registry_imports_no_sdk() -> None:
    code = (
        "import sys; from arbor.llm.providers.registry import ModelRegistry;"
        "r = ModelRegistry(); print(any(m in sys.modules for m in ('openai', 'llama_cpp')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _req() -> ChatRequest:
    return ChatRequest(model="x:y", messages=[Message.user("hi")])


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.json_response(completion())


def test_allowed_models_refuse_other_ids_before_building() -> None:
    built: list[str] = []

    def factory(name: str) -> Model:
        built.append(name)
        return FunctionModel(lambda r: "ok", name=name)

    registry = ModelRegistry(
        settings(default_model="test:default", llm={"allowed_models": ["test:gpt-*", "x:y"]})
    )
    registry.register("test", factory)
    assert registry.get("test:gpt-4o") is registry.get("test:gpt-4o")
    registry.get("test:default")  # the default model is always allowed
    for refused in ("test:other", "test:GPT-4o", "x:yz"):
        with pytest.raises(UnknownModelError, match="not allowed"):
            registry.get(refused)
    assert built == ["gpt-4o", "default"]
    assert ModelRegistry(settings()).allows("openai:anything")  # unset: any id


def test_at_most_max_models_are_kept_least_recently_used_dropped() -> None:
    registry = ModelRegistry(settings(llm={"max_models": 3}))
    registry.register("test", lambda name: FunctionModel(lambda r: name, name=name))
    first = registry.get("test:a")
    for name in ("b", "c"):
        registry.get(f"test:{name}")
    assert registry.get("test:a") is first  # a is now the most recently used
    for i in range(100):
        registry.get(f"test:random-{i}")
    assert len(registry._models) == 3
    assert registry.get("test:a") is not first  # dropped long ago, rebuilt on demand
