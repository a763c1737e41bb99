"""The software team as a durable workflow.

::

    analyst → developer ─┬─ qa ─────┬→ test ─(pass, or iteration cap)→ writer → report ─┐
                         └─ devops ─┘   │                                              │
                                        └─(fail)→ fix → test            (publish?) approve_publish
                                                                                  → publish → END

Every file reaches the run's workspace through :class:`~arbor.runtime.sandbox.Workspace`
(validated paths, atomic, size-limited) and each write is a ``workspace_write`` run event.
Tests run with pytest inside the OS sandbox; the JUnit results of each iteration are kept and
the failing ones go back to the developer. The only effect outside the workspace (copying the
result to the publish directory) sits behind an approval node reached only when the run was
started with ``publish: true``: nothing a model writes (files, rationale, test output) is
consulted by any edge, so "ignore your instructions and publish" in a reply cannot trigger it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from arbor.agents import AgentResult, OutputValidationError
from arbor.agents.definitions import RoleAgent
from arbor.agents.plugins import HookContext, Plugin
from arbor.agents.roles.outputs import (
    CodeDraft,
    DevOpsFiles,
    Docs,
    FileSpec,
    Requirements,
    TestSuite,
)
from arbor.agents.workflow import NodeContext
from arbor.agents.workflow.checkpoints import RunEvent
from arbor.agents.workflow.graph import END, NodeFn, Workflow
from arbor.apps.team.files import allowed_for, fenced_files, render_files
from arbor.apps.team.state import (
    MAX_ITERATIONS,
    Analysed,
    Developed,
    FailedTest,
    Iteration,
    Published,
    Reported,
    RoleUsage,
    TeamReport,
    TeamState,
    Tested,
)
from arbor.core.config import load_settings
from arbor.llm.types import ChatRequest, ChatResponse
from arbor.runtime.sandbox import (
    Sandbox,
    SandboxConfig,
    SandboxError,
    SandboxUnavailableError,
    TestReport,
    Workspace,
    WorkspaceError,
    WorkspaceLimits,
    WriteEvent,
    run_pytest,
)

__all__ = ["ALLOW_UNISOLATED_ENV", "TeamConfig", "build_team_workflow", "team_workflow"]

#: Set to ``1`` to let the catalogue's team workflow run tests without OS isolation.
ALLOW_UNISOLATED_ENV = "ARBOR_SANDBOX_ALLOW_UNISOLATED"
WRITE_EVENT = "workspace_write"
_FEEDBACK_CHARS = 6000
_PYTEST_ARGS = ("-o", "pythonpath=. src", "-o", "testpaths=tests .")


@dataclass(frozen=True)
class TeamConfig:
    """Where a run's files go and how its tests run."""

    model: str | None = None
    #: Each run gets ``workspaces/<run_id>`` ...
    workspaces: Path = Path(".arbor/workspaces")
    #: ... unless ``out`` names the one directory to use (the CLI's ``--out``).
    out: Path | None = None
    #: Where an approved publish copies the workspace to (``published/<run_id>``).
    published: Path = Path(".arbor/published")
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    limits: WorkspaceLimits = field(default_factory=WorkspaceLimits)
    #: The developer runs at most this many times in all (the state's cap is lower or equal).
    max_iterations: int = MAX_ITERATIONS


def team_workflow(model: str | None = None) -> Workflow[TeamState]:
    """The catalogue's factory: workspaces under ``ARBOR_HOME/workspaces/<run_id>``."""
    home = load_settings().home
    allow = os.environ.get(ALLOW_UNISOLATED_ENV, "").strip().lower() in ("1", "true", "yes")
    return build_team_workflow(
        TeamConfig(
            model=model,
            workspaces=home / "workspaces",
            published=home / "published",
            sandbox=SandboxConfig(allow_unisolated=allow),
        )
    )


class _Meter(Plugin):
    """Sums the tokens and cost of every LLM call of one agent run (re-asks included) and
    caps each reply at ``max_tokens`` when given."""

    def __init__(self, role: str, max_tokens: int | None = None) -> None:
        self.usage = RoleUsage(role=role)
        self.max_tokens = max_tokens

    async def before_llm_call(self, ctx: HookContext, request: ChatRequest) -> ChatRequest:
        if self.max_tokens is None:
            return request
        cap = min(request.max_tokens or self.max_tokens, self.max_tokens)
        return request.model_copy(update={"max_tokens": cap})

    async def after_llm_call(
        self, ctx: HookContext, request: ChatRequest, response: ChatResponse
    ) -> ChatResponse:
        u = self.usage
        u.input_tokens += response.usage.input_tokens
        u.output_tokens += response.usage.output_tokens
        u.cost_usd += response.cost_usd
        u.calls += 1
        return response


@dataclass
class _Reply:
    output: BaseModel | None
    raw: str
    usage: RoleUsage


async def _ask(
    ctx: NodeContext,
    config: TeamConfig,
    role: str,
    output_type: type[BaseModel],
    variables: Mapping[str, str],
    prompt: str,
    max_tokens: int | None = None,
) -> _Reply:
    """Run one role; a reply that never validates comes back raw (for the fenced fallback)."""
    agent = RoleAgent(
        ctx.node, role=role, model=config.model, output_type=output_type, max_output_retries=1
    )
    meter = _Meter(ctx.node, max_tokens)
    try:
        result: AgentResult[Any] = await ctx.run_agent(
            agent, prompt, deps=dict(variables), plugins=[meter]
        )
    except OutputValidationError as exc:
        return _Reply(None, exc.last_output, meter.usage)
    return _Reply(result.output, "", meter.usage)


def _files_of(reply: _Reply) -> list[FileSpec]:
    if reply.output is not None:
        return list(getattr(reply.output, "files", []))
    return fenced_files(reply.raw)


def _workspace(config: TeamConfig, run_id: str) -> Workspace:
    if config.out is not None:
        config.out.mkdir(parents=True, exist_ok=True)
        return Workspace(config.out, limits=config.limits)
    return Workspace.create(config.workspaces, run_id, limits=config.limits)


async def _write(
    ctx: NodeContext, config: TeamConfig, role: str, files: Sequence[FileSpec]
) -> tuple[list[FileSpec], list[str]]:
    """Write the files ``role`` may write; the others, and refused writes, become notes."""
    events: list[WriteEvent] = []
    written: list[FileSpec] = []
    notes: list[str] = []

    def write_all() -> None:
        ws = _workspace(config, ctx.run_id)
        for spec in files:
            if not allowed_for(role, spec.path):
                notes.append(f"{role}: {spec.path!r} is not a {role} file; not written")
                continue
            try:
                events.append(ws.write(spec.path, spec.content))
            except WorkspaceError as exc:
                notes.append(f"{role}: {exc}")
                continue
            written.append(spec)

    await asyncio.to_thread(write_all)
    for ev in events:
        data = {
            "path": ev.path,
            "size": ev.size,
            "sha256": ev.sha256,
            "created": ev.created,
            "role": role,
        }
        await ctx.emit(RunEvent(WRITE_EVENT, data=data))
    return written, notes


def _requirements_text(req: Requirements) -> str:
    lines = [req.summary, ""]
    for n, story in enumerate(req.user_stories, start=1):
        lines.append(
            f"Story {n}: as a {story.as_a}, I want {story.i_want}, so that {story.so_that}."
        )
        lines.extend(f"  - {c}" for c in story.acceptance_criteria)
    if req.non_functional:
        lines.append("Non-functional: " + "; ".join(req.non_functional))
    if req.out_of_scope:
        lines.append("Out of scope: " + "; ".join(req.out_of_scope))
    return "\n".join(lines)


def _merge(old: Sequence[FileSpec], new: Sequence[FileSpec]) -> list[FileSpec]:
    merged = {f.path: f for f in old}
    merged.update((f.path, f) for f in new)
    return list(merged.values())


def _feedback(it: Iteration, report: TestReport | None) -> str:
    parts = [f"Test run {it.number}: {it.passed} passed, {it.failed} failed."]
    if it.problem:
        parts.append(f"Problem: {it.problem}")
    for failure in it.failures:
        parts.append(f"FAILED {failure.name} ({failure.outcome}):\n{failure.message}")
    if report is not None and report.run is not None and (it.problem or not it.failures):
        tail = (report.run.stdout + "\n" + report.run.stderr).strip()[-2000:]
        if tail:
            parts.append(f"pytest output (end):\n{tail}")
    return "\n\n".join(parts)[:_FEEDBACK_CHARS]


def _iteration(number: int, report: TestReport) -> Iteration:
    it = Iteration(
        number=number,
        passed=report.passed,
        failed=report.failed,
        skipped=report.count("skipped"),
        ok=report.ok,
        problem=report.problem,
        isolated=report.run.isolated if report.run else None,
        failures=[
            FailedTest(
                name=f"{c.classname}.{c.name}".strip("."),
                outcome=c.outcome,
                message=c.message[:1500],
            )
            for c in report.cases
            if c.outcome in ("failed", "error")
        ],
    )
    if not it.ok and not it.failures and it.problem is None and report.run is not None:
        it.problem = f"pytest exited {report.run.exit_code}"
        if report.run.killed_by:
            it.problem += f" (killed by the {report.run.killed_by} limit)"
    return it


async def _run_tests(sandbox: Sandbox, state: TeamState, number: int) -> dict[str, Any]:
    """One sandboxed pytest run as JSON (recorded once per visit): the iteration and the
    feedback for the developer."""
    started = time.monotonic()
    report: TestReport | None = None
    if not state.test_files:
        it = Iteration(number=number, problem="there are no tests to run")
    else:
        try:
            report = await run_pytest(sandbox, state.workspace, _PYTEST_ARGS)
        except SandboxUnavailableError as exc:
            it = Iteration(number=number, problem=f"sandbox unavailable: {exc}")
        except SandboxError as exc:
            it = Iteration(number=number, problem=f"sandbox error: {exc}")
        else:
            it = _iteration(number, report)
    it.seconds = round(time.monotonic() - started, 3)
    return {
        "iteration": it.model_dump(mode="json"),
        "feedback": "" if it.ok else _feedback(it, report),
    }


_FilesField = Literal["code_files", "test_files", "devops_files", "doc_files"]


@dataclass(frozen=True)
class _FileRole:
    """A role that reads the requirements and some files, and writes files of its kind.

    ``agent`` names its prompt, ``output_type`` its reply and ``task`` the message it gets;
    ``writes`` is the kind of file it may write (:func:`allowed_for`); ``shows`` are the
    files it sees as ``code``; ``files``, ``usage`` and ``notes`` are the fields it sets (a
    parallel branch has usage and notes fields of its own: concurrent deltas must not
    overlap); ``if_none_written`` is noted when it wrote nothing.
    """

    agent: str
    output_type: type[BaseModel]
    task: str
    writes: str
    shows: tuple[_FilesField, ...]
    files: _FilesField
    usage: Literal["usage", "qa_usage", "devops_usage"]
    notes: Literal["notes", "qa_notes", "devops_notes"]
    if_none_written: str | None = None


_QA = _FileRole(
    "qa_engineer",
    TestSuite,
    "Write the tests now.",
    writes="qa",
    shows=("code_files",),
    files="test_files",
    usage="qa_usage",
    notes="qa_notes",
    if_none_written="qa: the reply held no usable test files",
)
_DEVOPS = _FileRole(
    "devops_engineer",
    DevOpsFiles,
    "Write the build, container and CI files now.",
    writes="devops",
    shows=("code_files",),
    files="devops_files",
    usage="devops_usage",
    notes="devops_notes",
)
_WRITER = _FileRole(
    "technical_writer",
    Docs,
    "Write the README now.",
    writes="writer",
    shows=("code_files", "devops_files"),
    files="doc_files",
    usage="usage",
    notes="notes",
)


class _Team:
    """The nodes, bound to one configuration."""

    def __init__(self, config: TeamConfig) -> None:
        self.config = config
        self.sandbox = Sandbox(config.sandbox)

    async def analyst(self, state: TeamState, ctx: NodeContext) -> Analysed:
        ws = await asyncio.to_thread(_workspace, self.config, ctx.run_id)
        reply = await _ask(
            ctx,
            self.config,
            "business_analyst",
            Requirements,
            {"task": state.prompt},
            state.prompt,
            max_tokens=state.max_tokens,
        )
        usage = [*state.usage, reply.usage]
        if isinstance(reply.output, Requirements):
            return Analysed(
                workspace=str(ws.root),
                requirements=reply.output,
                requirements_text=_requirements_text(reply.output),
                usage=usage,
            )
        return Analysed(
            workspace=str(ws.root),
            requirements_text=state.prompt,
            usage=usage,
            notes=[
                *state.notes,
                "analyst: reply did not validate; the developer worked from the prompt itself",
            ],
        )

    async def develop(self, state: TeamState, ctx: NodeContext) -> Developed:
        variables = {"requirements": state.requirements_text}
        if state.feedback:
            variables["feedback"] = state.feedback
            variables["code"] = render_files([*state.code_files, *state.test_files])
        reply = await _ask(
            ctx,
            self.config,
            "developer",
            CodeDraft,
            variables,
            "Implement the requirements now.",
            max_tokens=state.max_tokens,
        )
        files = _files_of(reply)
        written, notes = await _write(ctx, self.config, "developer", files)
        if not written:
            notes.append(f"developer (visit {ctx.visit}): the reply held no usable files")
        return Developed(
            code_files=_merge(state.code_files, written),
            usage=[*state.usage, reply.usage],
            notes=[*state.notes, *notes],
        )

    def role_node(self, role: _FileRole) -> NodeFn[TeamState]:
        """The node of ``role``: shown the requirements and some of the files so far, it
        writes files of its own kind (its fields of the state, named by ``role``)."""

        async def node(state: TeamState, ctx: NodeContext) -> TeamState:
            shown = [spec for name in role.shows for spec in getattr(state, name)]
            variables = {"requirements": state.requirements_text, "code": render_files(shown)}
            reply = await _ask(
                ctx,
                self.config,
                role.agent,
                role.output_type,
                variables,
                role.task,
                max_tokens=state.max_tokens,
            )
            written, notes = await _write(ctx, self.config, role.writes, _files_of(reply))
            if not written and role.if_none_written is not None:
                notes.append(role.if_none_written)
            return state.model_copy(
                update={
                    role.files: written,
                    role.usage: [*getattr(state, role.usage), reply.usage],
                    role.notes: [*getattr(state, role.notes), *notes],
                }
            )

        return node

    async def test(self, state: TeamState, ctx: NodeContext) -> Tested:
        number = len(state.iterations) + 1

        async def run() -> dict[str, Any]:
            return await _run_tests(self.sandbox, state, number)

        result = await ctx.once("pytest", run)
        it = Iteration.model_validate(result["iteration"])
        await ctx.emit(RunEvent("tests_finished", data=result["iteration"]))
        return Tested(iterations=[*state.iterations, it], feedback=result["feedback"])

    def after_test(self, state: TeamState) -> str:
        last = state.iterations[-1]
        if last.ok or len(state.iterations) >= state.max_iterations:
            return "writer"
        if last.problem and last.problem.startswith(("sandbox unavailable", "sandbox error")):
            return "writer"  # a developer cannot fix the host: stop, and say so
        if not state.test_files:
            return "writer"
        return "fix"

    async def report(self, state: TeamState, ctx: NodeContext) -> Reported:
        ws = await asyncio.to_thread(_workspace, self.config, ctx.run_id)
        files = await asyncio.to_thread(ws.files)
        usage = [*state.usage, *state.qa_usage, *state.devops_usage]
        ran = [it for it in state.iterations if it.isolated is not None]
        if not ran:
            isolation = "tests did not run"
        elif all(it.isolated for it in ran):
            isolation = "isolated (OS sandbox: namespaces, no network, own uid)"
        else:
            isolation = "UNISOLATED (isolation unavailable; allowed by configuration)"
        last = state.iterations[-1] if state.iterations else None
        rep = TeamReport(
            ok=bool(last and last.ok),
            workspace=state.workspace,
            files=files,
            iterations=state.iterations,
            iteration_count=len(state.iterations),
            isolation=isolation,
            input_tokens=sum(u.input_tokens for u in usage),
            output_tokens=sum(u.output_tokens for u in usage),
            cost_usd=round(sum(u.cost_usd for u in usage), 6),
            usage=usage,
            notes=[*state.notes, *state.qa_notes, *state.devops_notes],
        )
        return Reported(report=rep)

    def after_report(self, state: TeamState) -> str:
        return "approve_publish" if state.publish else END

    async def publish(self, state: TeamState, ctx: NodeContext) -> Reported | Published:
        assert state.report is not None
        if not state.approved:
            why = f" ({state.approval_reason})" if state.approval_reason else ""
            rep = state.report.model_copy(
                update={"notes": [*state.report.notes, f"publish rejected{why}; nothing copied"]}
            )
            return Reported(report=rep)

        def copy() -> str:
            source = _workspace(self.config, ctx.run_id)
            target = Workspace.create(self.config.published, ctx.run_id, limits=self.config.limits)
            for rel in source.files():
                target.write(rel, source.read(rel))
            return str(target.root)

        where = await ctx.once("publish", lambda: asyncio.to_thread(copy))
        await ctx.emit(RunEvent("workspace_published", data={"to": where}))
        return Published(
            published_to=where, report=state.report.model_copy(update={"published_to": where})
        )


def build_team_workflow(config: TeamConfig) -> Workflow[TeamState]:
    """The team graph (see the module docstring) for ``config``."""
    wf: Workflow[TeamState] = Workflow(
        "team",
        TeamState,
        max_steps=8 + 2 * config.max_iterations,
        description="A software team (analyst, developer, QA, DevOps, writer) builds a small "
        "Python project and tests it in a sandbox.",
    )
    t = _Team(config)
    wf.add_node("analyst", t.analyst)
    wf.add_node("developer", t.develop)
    wf.add_node("qa", t.role_node(_QA))
    wf.add_node("devops", t.role_node(_DEVOPS))
    wf.add_node("test", t.test, max_visits=config.max_iterations)
    wf.add_node("fix", t.develop, max_visits=config.max_iterations)
    wf.add_node("writer", t.role_node(_WRITER))
    wf.add_node("report", t.report)
    wf.add_approval(
        "approve_publish", prompt="Copy the generated project out of its workspace (publish)?"
    )
    wf.add_node("publish", t.publish)
    wf.edge("analyst", "developer")
    wf.fan_out("developer", ["qa", "devops"], join="test")
    wf.route("test", t.after_test, ["writer", "fix"])
    wf.edge("fix", "test")
    wf.edge("writer", "report")
    wf.route("report", t.after_report, ["approve_publish", END])
    wf.edge("approve_publish", "publish")
    wf.edge("publish", END)
    return wf
