"""Property tests of the service against its own ``/openapi.json`` (schemathesis).

With an admin key every documented operation is called with generated requests, valid and
invalid: nothing may answer 5xx, and every answer must match what the schema documents
(status code, content type, body schema, headers). Without a key every operation that is not
public must answer 401 — the operations come from the schema, so a route added later is
covered without editing this file.

The dashboard's pages are not in the schema (they are for people, behind a session cookie):
their routes are enumerated from the dashboard's router, and each must send a visitor without
a session to the login page (htmx requests get 401 with ``HX-Redirect``).

Schemathesis drives ASGI apps from its own event-loop thread, so the app's context (database,
LLM client, run manager) is opened by the app's lifespan on that loop rather than by the
async fixtures of ``conftest.py``, whose loop is a different one. Its pytest plugin
(``@schema.parametrize`` over a fixture) does not run on pytest 9, so each operation gets a
plain Hypothesis test built from ``operation.as_strategy``, and every failing operation is
reported together.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.schemas import OpenApiSchema

from arbor.agents.definitions import AgentDefinition
from arbor.core.config import Settings
from arbor.llm.model import Model
from arbor.runtime.spec import BatchSpec
from arbor.service.app import create_app
from arbor.service.context import open_context
from arbor.service.dashboard import router as dashboard_router
from arbor.store.agents import AgentRepository
from arbor.store.batches import NewItem

MakeHTTP = Callable[..., httpx.AsyncClient]

#: Operations anyone may call (``/metrics`` is public unless ``metrics_require_key``).
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}

# Operations whose valid-looking requests can still break a rule that JSON Schema cannot say:
# a reference to server state (a workflow name, an opaque page cursor), a rule across
# fields (a tool message needs tool_call_id; since before until), or the agent definition
# rules (a slug name, a known role), which are checked by the definition model shared with
# the CLI and YAML files. They answer those with the documented "invalid request" status
# (400 on OpenAI's paths, 422 elsewhere), which is therefore accepted for schema-valid data
# there; every other operation must accept all schema-valid data.
_OK = '"2xx", "3xx", "401", "403", "404", "409", "429"'
CONFIG = f"""
[[operations]]
include-path = "/v1/chat/completions"
checks.positive_data_acceptance.expected-statuses = [{_OK}, "400"]

[[operations]]
include-path-regex = "^/v1/(runs|agents|usage|batches|keys)$"
checks.positive_data_acceptance.expected-statuses = [{_OK}, "422"]

[[operations]]
include-path = "/v1/agents/{{name}}"
include-method = "PATCH"
checks.positive_data_acceptance.expected-statuses = [{_OK}, "422"]
"""

#: Bodies that name things that exist (the served model, a workflow), so the successful
#: answers (JSON and SSE) are generated and checked too, not only the refusals.
_HI = [{"role": "user", "content": "hi"}]
_USAGE = {"include_usage": True}
BODIES: dict[str, list[dict[str, object]]] = {
    "POST /v1/chat/completions": [
        {"model": "test:echo", "messages": _HI},
        {"model": "test:echo", "messages": _HI, "stream": True},
        {"model": "test:echo", "messages": _HI, "stream": True, "stream_options": _USAGE},
    ],
    "POST /v1/runs": [{"workflow": "review-loop", "input": {"task": "Write add(a, b)."}}],
    "POST /v1/agents": [{"name": "made-here", "instructions": "Be brief."}],
    "POST /v1/batches": [{"template": "Say {{ w }}", "rows": [{"w": "hi"}]}],
}

BOUNDED = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Served:
    """An app whose lifespan opens its context, and the admin key it made."""

    app: FastAPI
    admin_key: str = ""
    #: Path parameter values naming resources that exist (an agent, a key, a finished run),
    #: so generated requests reach the found-it answers too, not only 404s.
    ids: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def served(service_settings: Settings, service_models: dict[str, Model]) -> Iterator[Served]:
    served = Served(create_app(settings=service_settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await open_context(service_settings, models=service_models)
        app.state.ctx = ctx
        served.admin_key = (await ctx.keys.create("schemathesis", scopes=["admin"])).key
        other = await ctx.keys.create("seeded", scopes=["read"])
        await AgentRepository(ctx.db).create(
            "seeded", AgentDefinition(name="seeded", instructions="Say hi.").to_document()
        )
        assert ctx.runs is not None
        run_id = await ctx.runs.start("review-loop", {"task": "Write add(a, b)."})
        await ctx.runs.wait(run_id, timeout=10)
        assert ctx.batches is not None
        batch = await ctx.batches.create(
            [NewItem(0, {"w": "hi"})], BatchSpec(kind="template", template="{{ w }}"), name="b"
        )
        served.ids = {
            "name": "seeded",
            "key_id": other.record.id,
            "run_id": run_id,
            "model_id": "test:echo",
            "batch_id": batch.id,
        }
        try:
            yield
        finally:
            await ctx.aclose()
            app.state.ctx = None

    served.app.router.lifespan_context = lifespan
    try:
        yield served
    finally:
        shutdown_lifespans()  # closes the context on schemathesis's loop


@pytest.fixture
def api(served: Served) -> OpenApiSchema:
    config = SchemathesisConfig.from_str(CONFIG)
    return schemathesis.openapi.from_asgi("/openapi.json", served.app, config=config)


def _each_operation(
    api: OpenApiSchema, check: Callable[[Case], None], ids: dict[str, str]
) -> list[str]:
    """Run ``check`` on valid and invalid generated cases of every operation; the failures."""
    failures = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 20  # the schema really was read
    for operation in operations:
        cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
            GenerationMode.NEGATIVE
        )
        params = {p: ids[p] for p in re.findall(r"{(\w+)", operation.path) if p in ids}
        if params:
            cases |= operation.as_strategy(GenerationMode.POSITIVE, path_parameters=params)
        for body in BODIES.get(operation.label, ()):
            cases |= operation.as_strategy(
                GenerationMode.POSITIVE, body=body, media_type="application/json"
            )

        @BOUNDED
        @given(case=cases)
        def run(case: Case) -> None:
            check(case)

        try:
            run()
        except (Exception, FailureGroup) as exc:  # one report naming every failing operation
            failures.append(f"{operation.label}: {exc}")
    return failures


def test_with_an_admin_key_nothing_fails_and_answers_match_the_schema(
    api: OpenApiSchema, served: Served
) -> None:
    def check(case: Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {served.admin_key}"})

    failures = _each_operation(api, check, served.ids)
    assert not failures, "\n\n".join(failures)


def test_without_a_key_every_protected_operation_is_401(
    api: OpenApiSchema, served: Served, service_settings: Settings
) -> None:
    public = set(PUBLIC)
    if service_settings.service.metrics_require_key:
        public.discard(("GET", "/metrics"))

    def check(case: Case) -> None:
        response = case.call()
        if (case.method.upper(), case.path) in public:
            assert response.status_code < 500, response.text
            return
        assert response.status_code == 401, (case.method, case.path, response.text)
        content_type = response.headers["content-type"][0]
        assert content_type in ("application/problem+json", "application/json")
        assert response.headers["www-authenticate"] == ["Bearer"]

    failures = _each_operation(api, check, served.ids)
    assert not failures, "\n\n".join(failures)


def _routes(routes: Iterable[object]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        else:  # an included router (FastAPI keeps the original router on it)
            included = getattr(route, "original_router", None)
            yield from _routes(getattr(included, "routes", ()))


async def test_without_a_session_every_dashboard_page_sends_to_login(
    make_http: MakeHTTP,
) -> None:
    client = make_http()
    pages = [
        (method, route.path)
        for route in _routes(dashboard_router.routes)
        for method in sorted(route.methods)
        if not route.path.startswith(("/login", "/static/"))
    ]
    assert ("GET", "/") in pages and ("POST", "/keys/new") in pages and len(pages) >= 20
    for method, template in pages:
        path = template.replace("{", "x").replace("}", "")
        r = await client.request(method, path)
        assert r.status_code == 302, (method, path, r.status_code)
        assert r.headers["location"].startswith("/login"), (method, path)
        r = await client.request(method, path, headers={"HX-Request": "true"})
        assert r.status_code == 401 and r.headers["hx-redirect"].startswith("/login")
    r = await client.post("/login", data={"key": "arb_whatever"})  # no CSRF token
    assert r.status_code == 403
