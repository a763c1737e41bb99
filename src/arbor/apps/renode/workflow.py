"""``renode``: the agentic Renode generator on the workflow engine.

parse (SVD + peripheral, a request naming a shipped device, or a description → register map)
→ skeleton (deterministic C#, validated: the baseline) → plan (planner agent: side effects,
interrupt sources) → code (coder agent: the full C# with behaviour) → validate (the gate)
→ review (reviewer agent, accepted candidates only) → check (validators + reviewer verdict)
→ back to code until good enough or the iteration cap → finish (the best version).

The gate keeps the best version: a candidate is accepted only when it parses and builds with
zero errors and its register accuracy is at least the best so far (so never below the
skeleton's). A rejected candidate is recorded with its reason, which the coder gets next time.
``state.iterations`` lists every attempt (accepted or not, why, scores); ``state.output`` is
the best C#, ``state.report`` the summary.

Each node returns a typed partial update of :class:`RenodeState` (``Parsed``, ``Baseline``,
``Planned``, ``Coded``, ``Gated``, ``Reviewed``, ``Checked``, ``Finished``): only the fields
it sets apply, so a rejected candidate's ``Gated`` leaves the best version as it was.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from arbor.agents import Agent, AgentError
from arbor.agents.plugins import HookContext, Plugin
from arbor.agents.roles import render_instructions
from arbor.agents.roles.outputs import Review
from arbor.agents.workflow.checkpoints import RunEvent
from arbor.agents.workflow.context import NodeContext
from arbor.agents.workflow.graph import END, Workflow
from arbor.apps.renode.compile import compile_models
from arbor.apps.renode.emitter import EmittedModel, emit_model
from arbor.apps.renode.outputs import check_robot, repl_snippet, repl_type, robot_suite
from arbor.apps.renode.prompts import (
    CODER,
    DESCRIBER,
    PLANNER,
    Plan,
    coder_prompt,
    extract_code,
    planner_prompt,
    regmap_summary,
)
from arbor.apps.renode.regmap import RegisterMap, RenodeError
from arbor.apps.renode.resolve import ProposedMap, find_request, proposed_to_regmap
from arbor.apps.renode.svd import load_device
from arbor.apps.renode.validate import Confidence, validate_source
from arbor.core.errors import ArborError, ContextTooLongError
from arbor.llm.types import ChatRequest

__all__ = [
    "MAX_ITERATIONS",
    "Attempt",
    "Baseline",
    "Checked",
    "Coded",
    "Finished",
    "Gated",
    "Parsed",
    "Planned",
    "RenodeState",
    "Reviewed",
    "renode_workflow",
    "score",
    "write_outputs",
]

#: The hard cap of the refinement loop; ``state.max_iterations`` may only lower it.
MAX_ITERATIONS = 10
#: Good enough: the best version's confidence and an approving reviewer end the loop early.
GOOD_CONFIDENCE = 0.9


#: A reviewer's verdict on the best version ('' before any review of it).
Verdict = Literal["", "approve", "revise"]


class Attempt(BaseModel):
    """One version through the gate (iteration 0 is the deterministic skeleton)."""

    iteration: int
    accepted: bool
    reason: str
    syntax_errors: int
    compile_errors: int
    accuracy: float
    conventions: float
    confidence: float
    review: str = ""


class RenodeState(BaseModel):
    task: str = Field("", description="A request in words, e.g. 'USART1 of STM32F103xx'.")
    description: str = Field("", description="A peripheral described in words (no SVD).")
    svd: str = Field("", description="Path of a CMSIS-SVD file.")
    peripheral: str = ""
    max_iterations: int = Field(3, ge=1, le=MAX_ITERATIONS)
    max_tokens: int | None = Field(None, ge=16, description="Cap on each agent reply.")
    regmap: dict[str, Any] = Field(default_factory=dict)
    plan: str = ""
    #: Example models and manual text from the retrieval module ('' without one).
    context: str = ""
    candidate: str = ""
    coder_error: str = ""
    best: str = ""
    best_accuracy: float = 0.0
    best_confidence: float = 0.0
    feedback: str = ""
    review: str = ""
    verdict: Verdict = ""
    iterations: list[Attempt] = Field(default_factory=list)
    output: str = ""
    report: dict[str, Any] = Field(default_factory=dict)


class Parsed(BaseModel):
    """parse: the register map the run works from."""

    regmap: dict[str, Any]


class Baseline(BaseModel):
    """skeleton: the deterministic model is the first best version."""

    best: str
    best_accuracy: float
    best_confidence: float
    iterations: list[Attempt]


class Planned(BaseModel):
    """plan: the planner's advice and the reference context it was given."""

    plan: str
    context: str


class Coded(BaseModel):
    """code: the coder's candidate, or why there is none."""

    candidate: str
    coder_error: str


class Gated(BaseModel):
    """validate: the attempt is recorded either way; ``best*`` are set only when the
    candidate is accepted (left unset, they keep the state's best version)."""

    iterations: list[Attempt]
    verdict: Verdict
    feedback: str
    best: str = ""
    best_accuracy: float = 0.0
    best_confidence: float = 0.0


class Reviewed(BaseModel):
    """review: the reviewer's verdict on the accepted version and its notes."""

    verdict: Verdict
    review: str


class Checked(BaseModel):
    """check: the last attempt with the review notes that apply to it."""

    iterations: list[Attempt]


class Finished(BaseModel):
    """finish: the best C# and the run's report."""

    output: str
    report: dict[str, Any]


def score(regmap: RegisterMap, source: str) -> Confidence:
    """Validate one C# source against its map (one mcs run)."""
    name = emit_model(regmap).file_name
    return validate_source(regmap, source, compile_models({name: source})[name])


def _attempt(n: int, accepted: bool, reason: str, conf: Confidence) -> Attempt:
    return Attempt(
        iteration=n,
        accepted=accepted,
        reason=reason,
        syntax_errors=conf.syntax.failures,
        compile_errors=conf.compile.failures,
        accuracy=conf.accuracy.score,
        conventions=conf.conventions.score,
        confidence=conf.confidence,
    )


def _first(problem: str) -> str:
    """'12:5: CS1002: ; expected' → 'CS1002: ; expected at line 12' (one line, short)."""
    line, _, rest = problem.partition(":")
    rest = " ".join(rest.split())
    if len(rest) > 120:
        rest = rest[:117] + "..."
    if line.isdigit():
        rest = rest.partition(":")[2].strip() if rest.partition(":")[0].strip().isdigit() else rest
        return f"{rest.strip()} at line {line}"
    return problem


def gate(conf: Confidence, best_accuracy: float) -> str:
    """Why a candidate is rejected ('' when accepted)."""
    if conf.syntax.failures:
        return f"syntax errors ({conf.syntax.failures}): {_first(conf.syntax.problems[0])}"
    if conf.compile.failures:
        return f"compile failed: {_first(conf.compile.problems[0])}"
    if conf.accuracy.score < best_accuracy:
        lost = f"; {conf.accuracy.problems[0]}" if conf.accuracy.problems else ""
        return f"accuracy {conf.accuracy.score:.2f} < {best_accuracy:.2f}{lost}"
    return ""


class _CapTokens(Plugin):
    """Caps ``max_tokens`` of every model call of an agent."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit

    async def before_llm_call(self, ctx: HookContext, request: ChatRequest) -> ChatRequest:
        if self.limit is None:
            return request
        cap = min(request.max_tokens or self.limit, self.limit)
        return request.model_copy(update={"max_tokens": cap})


def reference(query: str) -> str:
    """Example snippets and manual chunks for ``query`` from the optional retrieval module
    (``arbor.apps.renode.retrieval``); '' when it, or its collection, is absent or empty."""
    try:
        module = importlib.import_module("arbor.apps.renode.retrieval")
    except ImportError:
        return ""
    fetch = getattr(module, "fetch_context", None)
    if fetch is None:
        return ""
    try:
        found = fetch(query)
    except ArborError:
        return ""
    if isinstance(found, str):
        return found
    return "\n\n".join(str(getattr(x, "text", x)) for x in found or [])


def _done(state: RenodeState) -> bool:
    spent = len(state.iterations) - 1 >= state.max_iterations
    good = state.verdict == "approve" and state.best_confidence >= GOOD_CONFIDENCE
    return spent or (good and state.iterations[-1].accepted)


async def _run(
    ctx: NodeContext, agent: Agent[Any], prompt: str, state: RenodeState, deps: Any = None
) -> Any:
    result = await ctx.run_agent(agent, prompt, deps=deps, plugins=[_CapTokens(state.max_tokens)])
    return result.output


async def _input_map(state: RenodeState, ctx: NodeContext, model: str | None) -> RegisterMap:
    """The register map the run starts from (see the module docstring)."""
    if state.svd:
        if not state.peripheral:
            raise RenodeError("an SVD input needs a peripheral name")
        device = await asyncio.to_thread(load_device, Path(state.svd))
        regmap = device.peripheral(state.peripheral)
    elif state.task.strip():
        svd, name = await asyncio.to_thread(find_request, state.task)
        regmap = (await asyncio.to_thread(load_device, svd)).peripheral(name)
    elif state.description.strip():
        agent = Agent("describer", DESCRIBER, model=model, output_type=ProposedMap)
        try:
            proposal = await _run(ctx, agent, state.description, state)
        except AgentError as exc:
            raise RenodeError(f"no register map could be read from the description: {exc}") from exc
        regmap = proposed_to_regmap(proposal)
    else:
        raise RenodeError(
            "empty description: give an SVD file and a peripheral, a request naming a "
            "device and peripheral, or a description of the peripheral's registers"
        )
    if not regmap.registers:
        raise RenodeError(f"{regmap.peripheral} has no registers to model")
    return regmap


async def _validate(state: RenodeState, ctx: NodeContext, regmap: RegisterMap) -> Gated:
    """The gate over ``state.candidate``: recorded either way, kept only when accepted."""
    conf = await asyncio.to_thread(score, regmap, state.candidate)
    reason = gate(conf, state.best_accuracy)
    if state.coder_error:
        reason = f"the coder failed: {state.coder_error}"
    elif not state.candidate.strip():
        reason = "no C# code in the coder's reply"
    elif not reason and state.candidate.strip() == state.best.strip():
        reason = "unchanged: the edit added nothing"
    attempt = _attempt(len(state.iterations), not reason, reason or "builds; accuracy kept", conf)
    await ctx.emit(RunEvent("iteration", data=attempt.model_dump(mode="json")))
    iterations = [*state.iterations, attempt]
    if reason:
        return Gated(iterations=iterations, verdict="", feedback=reason)
    return Gated(
        iterations=iterations,
        verdict="",
        feedback="",
        best=state.candidate,
        best_accuracy=conf.accuracy.score,
        best_confidence=conf.confidence,
    )


async def _review(
    state: RenodeState, ctx: NodeContext, model: str | None, regmap: RegisterMap
) -> Reviewed:
    """The reviewer on the accepted version; its issues are notes for the coder."""
    task = f"A Renode C# model of this register map:\n{regmap_summary(regmap)}\n\n{state.plan}"
    instructions = render_instructions("reviewer", task=task, code=state.best, include_schema=False)
    agent = Agent("reviewer", "{{ deps }}", model=model, output_type=Review, max_output_retries=1)
    try:
        verdict: Review = await _run(
            ctx,
            agent,
            "Review the code above and reply with the JSON object.",
            state,
            deps=instructions,
        )
    except (AgentError, ContextTooLongError) as exc:
        return Reviewed(verdict="revise", review=f"(no usable review: {exc})")
    notes = "\n".join(
        f"- [{i.severity}] {i.location}: {i.problem} {i.suggestion}" for i in verdict.issues
    )
    return Reviewed(verdict=verdict.verdict, review=notes or verdict.summary)


def renode_workflow(
    model: str | None = None, *, max_iterations: int = MAX_ITERATIONS
) -> Workflow[RenodeState]:
    wf = Workflow(
        "renode",
        RenodeState,
        max_steps=10 + 4 * max_iterations,
        description="Renode peripheral model (C#): SVD or description → skeleton → "
        "planner/coder/reviewer refinement behind a validator gate.",
    )

    def regmap_of(state: RenodeState) -> RegisterMap:
        return RegisterMap.model_validate(state.regmap)

    async def parse(state: RenodeState, ctx: NodeContext) -> Parsed:
        regmap = await _input_map(state, ctx, model)
        return Parsed(regmap=regmap.model_dump(mode="json"))

    async def skeleton(state: RenodeState, ctx: NodeContext) -> Baseline:
        regmap = regmap_of(state)
        source = emit_model(regmap).source
        conf = await asyncio.to_thread(score, regmap, source)
        first = _attempt(0, True, "deterministic skeleton (baseline)", conf)
        await ctx.emit(RunEvent("iteration", data=first.model_dump(mode="json")))
        return Baseline(
            best=source,
            best_accuracy=conf.accuracy.score,
            best_confidence=conf.confidence,
            iterations=[first],
        )

    async def plan(state: RenodeState, ctx: NodeContext) -> Planned:
        regmap = regmap_of(state)
        query = f"{regmap.peripheral} {regmap.description} registers interrupts"
        context = await asyncio.to_thread(reference, query)
        agent = Agent("planner", PLANNER, model=model, output_type=Plan, max_output_retries=0)
        try:
            result: Plan = await _run(ctx, agent, planner_prompt(regmap, context), state)
        except (AgentError, ContextTooLongError) as exc:  # a plan is advice: go on without one
            return Planned(plan=f"- (the planner gave no usable plan: {exc})", context=context)
        return Planned(plan=result.text(), context=context)

    async def code(state: RenodeState, ctx: NodeContext) -> Coded:
        regmap = regmap_of(state)
        prompt = coder_prompt(
            regmap, state.best, state.plan, state.feedback, state.review, state.context
        )
        try:
            reply: str = await _run(ctx, Agent("coder", CODER, model=model), prompt, state)
        except (AgentError, ContextTooLongError) as exc:  # this iteration is lost, not the run
            return Coded(candidate="", coder_error=str(exc))
        return Coded(candidate=extract_code(reply), coder_error="")

    async def validate(state: RenodeState, ctx: NodeContext) -> Gated:
        return await _validate(state, ctx, regmap_of(state))

    async def review(state: RenodeState, ctx: NodeContext) -> Reviewed:
        return await _review(state, ctx, model, regmap_of(state))

    async def check(state: RenodeState, ctx: NodeContext) -> Checked:
        last = state.iterations[-1]
        note = state.review if last.accepted else ""
        updated = [*state.iterations[:-1], last.model_copy(update={"review": note})]
        return Checked(iterations=updated)

    async def finish(state: RenodeState, ctx: NodeContext) -> Finished:
        regmap = regmap_of(state)
        final = await asyncio.to_thread(score, regmap, state.best)
        accepted = [a.iteration for a in state.iterations[1:] if a.accepted]
        report = {
            "device": regmap.device,
            "peripheral": regmap.peripheral,
            "plan": state.plan,
            "skeleton": state.iterations[0].model_dump(mode="json"),
            "final": final.model_dump(mode="json"),
            "accepted_iterations": accepted,
            "iterations": [a.model_dump(mode="json") for a in state.iterations],
            "stage": "agentic refinement"
            if accepted
            else "deterministic skeleton (no edit accepted)",
        }
        return Finished(output=state.best, report=report)

    wf.add_node("parse", parse)
    wf.add_node("skeleton", skeleton)
    wf.add_node("plan", plan)
    wf.add_node("code", code)
    wf.add_node("validate", validate)
    wf.add_node("review", review)
    wf.add_node("check", check)
    wf.add_node("finish", finish)
    wf.edge("parse", "skeleton")
    wf.edge("skeleton", "plan")
    wf.edge("plan", "code")
    wf.edge("code", "validate")
    wf.route(
        "validate",
        lambda s: "review" if s.iterations[-1].accepted else "check",
        ["review", "check"],
    )
    wf.edge("review", "check")
    wf.refine_until("check", _done, refine="code", then="finish", max_iterations=max_iterations)
    wf.edge("finish", END)
    return wf


def write_outputs(state: RenodeState, out: Path) -> dict[str, str]:
    """Write the best model, its ``.repl``, Robot suite and the run's JSON report into
    ``out``; the file names by kind."""
    regmap = RegisterMap.model_validate(state.regmap)
    emitted = emit_model(regmap)
    model = EmittedModel(emitted.type_name, emitted.namespace, state.output)
    robot = robot_suite(regmap, model)
    checked = check_robot(robot)
    if out.exists() and not out.is_dir():
        raise RenodeError(f"output path {out} exists and is not a directory")
    stem = model.type_name
    files = {
        "model": model.file_name,
        "repl": f"{stem}.repl",
        "robot": f"{stem}.robot",
        "report": f"{stem}.json",
    }
    report = {
        **state.report,
        "type": repl_type(model),
        "files": files,
        "robot_tests": checked.tests,
        "robot_errors": list(checked.errors),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / files["model"]).write_text(state.output, encoding="utf-8")
        (out / files["repl"]).write_text(repl_snippet(regmap, model), encoding="utf-8")
        (out / files["robot"]).write_text(robot, encoding="utf-8")
        (out / files["report"]).write_text(json.dumps(report, indent=2), encoding="utf-8")
    except OSError as exc:
        raise RenodeError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    return files
