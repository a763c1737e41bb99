"""The dashboard in a real browser: Playwright driving Debian's Chromium (headless) against
the app served by uvicorn on a loopback port (in a thread with its own event loop), with
deterministic doubles as the model. A person logs in, creates an agent, starts a run and
watches its node events arrive without reloading, approves a paused run, creates and revokes
an API key. Screenshots are kept under ``test-artifacts/dashboard/`` (or
``$ARBOR_TEST_ARTIFACTS``).

Chromium is a required service in CI: without it these tests fail when
``ARBOR_REQUIRE_SERVICES=1`` and are skipped otherwise (``make test`` installs it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from _workflows import gate, review_reply
from arbor.core.config import Settings, load_settings
from arbor.llm.types import ChatRequest
from arbor.service.app import create_app
from arbor.service.context import ServiceContext, open_context
from arbor.testing import FunctionModel

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

REPO = Path(__file__).resolve().parents[3]
#: Seconds each model call takes: long enough that a person (and this test) sees the run
#: progress node by node.
CALL_SECONDS = 1.2
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")


def chromium_path() -> str:
    """Debian's Chromium; fails in CI (``ARBOR_REQUIRE_SERVICES=1``) when missing, else skips."""
    given = os.environ.get("ARBOR_TEST_CHROMIUM")
    found = given or next(filter(None, (shutil.which(n) for n in CHROMIUM_CANDIDATES)), None)
    if found and Path(found).exists():
        return found
    message = "Chromium is required: apt-get install chromium (make test installs it)"
    if os.environ.get("ARBOR_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


async def slow_review(request: ChatRequest) -> str:
    await asyncio.sleep(CALL_SECONDS)
    return review_reply(request)


@dataclass
class LiveDashboard:
    """The app under uvicorn on ``127.0.0.1:<free port>`` with an admin key."""

    settings: Settings
    port: int = 0
    admin_key: str = ""
    error: BaseException | None = None
    ctx: ServiceContext | None = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        self._ready.wait(30)
        deadline = time.monotonic() + 30
        while not (self._server is not None and self._server.started):
            if self.error is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.error!r}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(20)

    def _run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._main(sock))
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    async def _main(self, sock: socket.socket) -> None:
        models = {"test:slow": FunctionModel(slow_review, name="slow")}
        ctx = await open_context(self.settings, models=models, workflows={"gate": gate})
        self.ctx = ctx
        try:
            self.admin_key = (await ctx.keys.create("browser-admin", scopes=["admin"])).key
            config = uvicorn.Config(
                create_app(ctx), log_level="warning", access_log=False, timeout_graceful_shutdown=3
            )
            self._server = uvicorn.Server(config)
            self._ready.set()
            await self._server.serve(sockets=[sock])
        finally:
            await ctx.aclose()


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_path()


@pytest.fixture(scope="module")
def live(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDashboard]:
    home = tmp_path_factory.mktemp("dashboard")
    settings = load_settings(
        home=home,
        database_url=f"sqlite+aiosqlite:///{home / 'dashboard.db'}",
        default_model="test:slow",
        llm={"cache": {"enabled": False}},
    )
    server = LiveDashboard(settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(chromium: str, live: LiveDashboard) -> Iterator[Browser]:
    # Chromium refuses to run as root with its sandbox on (containers, CI runners).
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    root = Path(os.environ.get("ARBOR_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder = root / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Browser, live: LiveDashboard) -> Iterator[Page]:
    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    opened = context.new_page()
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield opened
    context.close()
    # A CSP violation or a broken script shows up here (answers such as the 401 of a wrong
    # key are logged as "Failed to load resource" and are expected).
    bad = [e for e in errors if not e.startswith("Failed to load resource")]
    assert not bad, "\n".join(bad)


def shot(page: Page, artifacts: Path, name: str) -> None:
    # caret="initial": Playwright's default hides the caret with an inline style, which the
    # page's CSP (rightly) refuses when htmx settles a swapped element.
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True, caret="initial")


def log_in(page: Page, key: str) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Overview")


def test_log_in_and_create_an_agent(page: Page, live: LiveDashboard, artifacts: Path) -> None:
    page.goto("/login")
    page.fill("#api_key", "arb_not_a_real_key_0000000000000000")
    page.click("button[type=submit]")
    expect(page.locator(".flash.error")).to_contain_text("not valid")
    log_in(page, live.admin_key)
    shot(page, artifacts, "01-overview")
    assert live.admin_key not in page.content()
    page.click("nav >> text=Agents")
    page.click("text=New agent")
    page.fill("#name", "reviewer-bot")
    page.select_option("#role", "reviewer")
    page.fill("#description", "Reviews <code> strictly")
    page.fill("#model", "test:slow")
    page.fill("#max_steps", "3")
    shot(page, artifacts, "02-agent-form")
    page.click("text=Create agent")
    expect(page).to_have_url(re.compile(r"/agents/reviewer-bot$"))
    expect(page.locator("h1")).to_contain_text("reviewer-bot")
    page.click("nav >> text=Agents")
    row = page.locator('tr[data-agent="reviewer-bot"]')
    expect(row).to_contain_text("enabled")
    expect(row).to_contain_text("Reviews <code> strictly")  # shown as text, not markup
    row.locator("text=Disable").click()
    expect(page.locator("h1")).to_contain_text("disabled")
    shot(page, artifacts, "03-agent-disabled")


def test_start_a_run_and_watch_it_finish_live(
    page: Page, live: LiveDashboard, artifacts: Path
) -> None:
    log_in(page, live.admin_key)
    page.click("nav >> text=Runs")
    page.click("text=Start a run")
    # Picking a workflow swaps in its example input (htmx): wait for the new box first.
    page.locator("#input").evaluate("box => box.dataset.old = 'yes'")
    page.select_option("#workflow", "review-loop")
    expect(page.locator("#input:not([data-old])")).to_have_count(1)
    expect(page.locator("#input")).to_have_value(re.compile(r'"task": ""'))
    page.fill("#input", '{"task": "Write add(a, b)."}')
    page.click("button:has-text('Start')")
    expect(page).to_have_url(re.compile(r"/runs/run_"))
    # Mark this document: if the page reloaded or navigated, the mark would be gone.
    page.evaluate("document.documentElement.dataset.loadedOnce = 'yes'")
    events = page.locator("#events li")
    at_load = events.count()
    expect(page.locator("#run-status-badge")).to_have_attribute("data-status", "running")
    # The reviewer's node starts only after the writer's slow model call: it arrives live,
    # in the timeline and in the node progress.
    expect(page.locator('#events li[data-type="node_started"]')).to_have_count(2, timeout=15_000)
    expect(page.locator('#nodes [data-node="write"]')).to_have_attribute("data-status", "finished")
    expect(page.locator('#nodes [data-node="review"]')).to_be_visible()
    shot(page, artifacts, "04-run-in-progress")
    expect(page.locator("#run-status-badge")).to_have_attribute(
        "data-status", "succeeded", timeout=20_000
    )
    expect(page.locator('#events li[data-type="run_finished"]')).to_have_count(1)
    assert events.count() > at_load
    assert page.evaluate("document.documentElement.dataset.loadedOnce") == "yes"
    expect(page.locator("#run-output")).to_contain_text("add")
    shot(page, artifacts, "05-run-finished")
    seqs = [int(s.removeprefix("ev-")) for s in events.evaluate_all("l => l.map(e => e.id)")]
    assert seqs == sorted(set(seqs))  # every event once, in order
    page.click("#replay-link")
    expect(page.locator('#events li[data-type="run_finished"]')).to_have_count(1, timeout=20_000)
    replayed = [int(s.removeprefix("ev-")) for s in events.evaluate_all("l => l.map(e => e.id)")]
    assert replayed == seqs
    shot(page, artifacts, "06-run-replayed")


def test_approve_a_paused_run(page: Page, live: LiveDashboard, artifacts: Path) -> None:
    log_in(page, live.admin_key)
    page.goto("/runs/new?workflow=gate")
    page.fill("#input", '{"task": "release 1.0"}')
    page.click("button:has-text('Start')")
    expect(page.locator("#run-status-badge")).to_have_attribute(
        "data-status", "waiting_approval", timeout=15_000
    )
    approval = page.locator("#approval-sign_off")
    expect(approval).to_be_visible()
    shot(page, artifacts, "07-run-waiting-for-approval")
    approval.locator("input[name=reason]").fill("ship it")
    approval.locator("button:has-text('Approve')").click()
    expect(page.locator("#run-status-badge")).to_have_attribute(
        "data-status", "succeeded", timeout=15_000
    )
    expect(page.locator("#run-output")).to_contain_text("shipped (ship it)")
    expect(page.locator("#run-status")).to_contain_text("browser-admin")
    shot(page, artifacts, "08-run-approved")


def test_create_and_revoke_a_key(page: Page, live: LiveDashboard, artifacts: Path) -> None:
    log_in(page, live.admin_key)
    page.click("nav >> text=API keys")
    page.click("summary:has-text('Create a key')")
    page.fill("#key-name", "ci-bot")
    page.check("input[name=scopes][value=read]")
    page.fill("#rpm", "30")
    page.click("button:has-text('Create key')")
    secret = page.locator("#new-key-secret").inner_text().strip()
    assert secret.startswith("arb_")
    shot(page, artifacts, "09-key-created")
    page.click("nav >> text=API keys")
    assert secret not in page.content()  # shown once only
    row = page.locator('tr[data-name="ci-bot"]')
    expect(row).to_contain_text("active")
    row.locator("text=Revoke").click()
    expect(page.locator("#confirm")).to_contain_text("cannot be undone")
    page.click("#confirm button:has-text('Revoke')")
    expect(page.locator('tr[data-name="ci-bot"]')).to_contain_text("revoked")
    shot(page, artifacts, "10-key-revoked")
    # The revoked key no longer logs in.
    page.click("text=Log out")
    page.fill("#api_key", secret)
    page.click("button[type=submit]")
    expect(page.locator(".flash.error")).to_contain_text("not valid")


def test_overview_charts_refresh_by_themselves(
    page: Page, live: LiveDashboard, artifacts: Path
) -> None:
    log_in(page, live.admin_key)
    page.evaluate("document.documentElement.dataset.loadedOnce = 'yes'")
    for _ in range(3):
        page.request.get("/healthz")
    # The panel polls every 3 s; after two polls the rate has a value.
    expect(page.locator("#card-rps .muted")).to_contain_text("peak", timeout=10_000)
    expect(page.locator("#card-rps polyline")).to_have_count(1)
    assert page.evaluate("document.documentElement.dataset.loadedOnce") == "yes"
    shot(page, artifacts, "11-overview-live")


def test_the_runs_list_picks_up_new_runs_by_itself(
    page: Page, live: LiveDashboard, artifacts: Path
) -> None:
    log_in(page, live.admin_key)
    page.goto("/runs?workflow=gate")
    page.evaluate("document.documentElement.dataset.loadedOnce = 'yes'")
    started = page.request.post(
        "/v1/runs",
        data={"workflow": "gate", "input": {"task": "from the API"}},
        headers={"Authorization": f"Bearer {live.admin_key}"},
    )
    assert started.status == 201
    run_id = started.json()["id"]
    row = page.locator(f'tr[data-run="{run_id}"]')
    expect(row).to_contain_text("waiting approval", timeout=10_000)
    assert page.evaluate("document.documentElement.dataset.loadedOnce") == "yes"
    shot(page, artifacts, "12-runs-list")


def test_a_batch_progresses_live(page: Page, live: LiveDashboard, artifacts: Path) -> None:
    log_in(page, live.admin_key)
    created = page.request.post(
        "/v1/batches",
        data={
            "template": "Review item {{ n }}",
            "rows": [{"n": n} for n in range(6)],
            "concurrency": 2,
            "name": "browser batch",
        },
        headers={"Authorization": f"Bearer {live.admin_key}"},
    )
    assert created.status == 202, created.text()
    batch_id = created.json()["id"]
    page.click("nav >> text=Batches")
    row = page.locator(f'tr[data-batch="{batch_id}"]')
    expect(row).to_contain_text("browser batch")
    expect(row.locator("svg.progress")).to_be_visible()
    shot(page, artifacts, "13-batches-list")
    row.locator(f"text={batch_id}").click()
    expect(page).to_have_url(re.compile(f"/batches/{batch_id}$"))
    page.evaluate("document.documentElement.dataset.loadedOnce = 'yes'")
    succeeded = page.locator('#batch-counts [data-count="succeeded"]')
    # Each call takes CALL_SECONDS, two at a time: the counts climb while the page stays.
    expect(succeeded).not_to_have_text("0", timeout=15_000)
    expect(page.locator("#batch-status")).to_have_attribute("data-status", "running")
    shot(page, artifacts, "14-batch-in-progress")
    expect(page.locator("#batch-status")).to_have_attribute(
        "data-status", "succeeded", timeout=30_000
    )
    expect(succeeded).to_have_text("6")
    expect(page.locator("#live-mark")).to_have_count(0)  # finished: polling stopped
    assert page.evaluate("document.documentElement.dataset.loadedOnce") == "yes"
    shot(page, artifacts, "15-batch-finished")
    page.click('#items tr[data-item="3"] a')
    expect(page.locator("#item-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#item-input")).to_contain_text('"n": 3')
    shot(page, artifacts, "16-batch-item")
