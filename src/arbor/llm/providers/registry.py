"""Model ids (``provider:model``) → :class:`~arbor.llm.model.Model` instances, built once.

``local:<name>`` runs a GGUF in-process; ``openai:<model>`` and every provider named in
``settings.providers`` speak the OpenAI wire format to the base URL and key from settings
(never from a request, so a caller cannot point Arbor's credentials elsewhere). Tests
``register`` their own factories. Provider modules are imported on first use, so building a
registry does not import the ``openai`` SDK or llama.cpp.

Model ids come from requests, so the registry bounds them: ``llm.allowed_models`` (globs)
refuses ids outside the list before anything is built, and at most ``llm.max_models`` built
models are kept, least recently used dropped first. A dropped model is not closed (a call may
still hold it): HTTP models share their provider's connection pool, which stays open.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from arbor.core.config import ProviderSettings, Settings
from arbor.core.errors import ConfigError, UnknownModelError
from arbor.llm.model import Model

if TYPE_CHECKING:
    from arbor.llm.providers.openai import ProviderClients

__all__ = ["ModelFactory", "ModelRegistry"]

#: Builds the model for a model name (the part of the id after ``provider:``).
ModelFactory = Callable[[str], Model]


class ModelRegistry:
    """Resolves and caches models; :meth:`aclose` closes every model and connection pool."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._factories: dict[str, ModelFactory] = {}
        self._models: OrderedDict[str, Model] = OrderedDict()
        self._clients: ProviderClients | None = None

    @property
    def providers(self) -> list[str]:
        """Provider names this registry can serve, sorted."""
        names = {"local", "openai", *self.settings.providers, *self._factories}
        return sorted(names)

    def register(self, provider: str, factory: ModelFactory) -> None:
        """Serve ``provider:<name>`` with ``factory(name)``; it wins over settings.
        Models already built for that provider are kept until :meth:`aclose`."""
        self._factories[provider] = factory

    def get(self, model_id: str) -> Model:
        """The model for ``provider:model``, built on first use and then shared."""
        model = self._models.get(model_id)
        if model is not None:
            self._models.move_to_end(model_id)
            return model
        if not self.allows(model_id):
            raise UnknownModelError(
                f"model {model_id!r} is not allowed on this server (see llm.allowed_models)",
                provider=model_id.partition(":")[0],
                model=model_id.partition(":")[2],
            )
        model = self._models[model_id] = self._build(model_id)
        while len(self._models) > self.settings.llm.max_models:
            self._models.popitem(last=False)
        return model

    def allows(self, model_id: str) -> bool:
        """Whether ``llm.allowed_models`` (unset: everything) admits ``model_id``."""
        allowed = self.settings.llm.allowed_models
        if allowed is None or model_id == self.settings.default_model:
            return True
        return any(fnmatchcase(model_id, pattern) for pattern in allowed)

    async def aclose(self) -> None:
        models, self._models = list(self._models.values()), OrderedDict()
        for model in models:
            await model.aclose()
        if self._clients is not None:
            clients, self._clients = self._clients, None
            await clients.aclose()

    # ---- building ---------------------------------------------------------------------
    def _build(self, model_id: str) -> Model:
        provider, sep, name = model_id.partition(":")
        if not sep or not provider or not name:
            raise UnknownModelError(
                f"model id {model_id!r} is not of the form provider:model "
                f"(known providers: {', '.join(self.providers)})",
                provider=provider,
                model=name,
            )
        factory = self._factories.get(provider)
        if factory is not None:
            return factory(name)
        if provider == "local":
            return self._local(name)
        endpoint = self.settings.provider(provider)
        if endpoint is None:
            raise UnknownModelError(
                f"unknown provider {provider!r} in {model_id!r}; known providers: "
                f"{', '.join(self.providers)} (add one with ARBOR_PROVIDERS__<NAME>__BASE_URL)",
                provider=provider,
                model=name,
            )
        return self._openai_compatible(provider, name, endpoint)

    def _local(self, name: str) -> Model:
        from arbor.llm.providers.local import LocalGGUFModel, resolve_local_model

        llm = self.settings.llm
        return LocalGGUFModel(
            name,
            resolve_local_model(name),
            n_ctx=llm.local_context,
            n_threads=llm.local_threads,
            total_timeout=llm.timeouts.total,
        )

    def _openai_compatible(self, provider: str, name: str, endpoint: ProviderSettings) -> Model:
        from arbor.llm.providers.openai import OpenAICompatibleModel, ProviderClients

        if endpoint.api_key is None and "://api.openai.com" in endpoint.base_url:
            variable = (
                "ARBOR_OPENAI_API_KEY"
                if provider == "openai" and provider not in self.settings.providers
                else f"ARBOR_PROVIDERS__{provider.upper()}__API_KEY"
            )
            message = f"{provider}:{name} needs an API key: set {variable}"
            raise ConfigError(message, variable=variable)
        timeouts = self.settings.llm.timeouts
        if self._clients is None:
            self._clients = ProviderClients(timeouts)
        client = self._clients.get(provider, endpoint)
        return OpenAICompatibleModel(provider, name, endpoint, timeouts, client=client)
