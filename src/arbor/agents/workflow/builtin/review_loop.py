"""``review-loop``: a writer drafts, a reviewer judges, and the draft is revised with the
reviewer's issues until it is approved or the iteration cap is reached.

Each agent run is recorded under an idempotency key, so a resumed run never asks the model
again for a draft or review that was already produced. The writer returns a :class:`Drafted`
update and the reviewer a :class:`Reviewed` one: each names the state fields it sets.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from arbor.agents.agent import Agent
from arbor.agents.roles import render_instructions
from arbor.agents.roles.outputs import Review
from arbor.agents.workflow.context import NodeContext
from arbor.agents.workflow.graph import END, Workflow
from arbor.core.errors import WorkflowError
from arbor.llm.client import LLMClient
from arbor.llm.types import CallContext

__all__ = ["Drafted", "ReviewLoopState", "Reviewed", "review_loop"]

WRITER = (
    "You write the deliverable the task asks for: code, text or a plan. Reply with the "
    "deliverable only, complete, with no commentary before or after it. When reviewer "
    "feedback is given, fix every issue it lists and keep everything that was not criticised."
)


class ReviewLoopState(BaseModel):
    task: str = Field(min_length=1, description="What to produce.")
    draft: str = ""
    verdict: Literal["", "approve", "revise"] = ""
    feedback: str = ""
    iterations: int = 0
    max_iterations: int = Field(3, ge=1, le=20)


class Drafted(BaseModel):
    """The writer's update: a new draft, one more iteration."""

    draft: str
    iterations: int


class Reviewed(BaseModel):
    """The reviewer's update: its verdict and the issues to fix."""

    verdict: Literal["approve", "revise"]
    feedback: str


def _writer_prompt(state: ReviewLoopState) -> str:
    if not state.feedback:
        return state.task
    return (
        f"Task:\n{state.task}\n\nYour previous draft:\n{state.draft}\n\n"
        f"Reviewer issues to fix:\n{state.feedback}\n\nWrite the improved draft."
    )


def _feedback(review: Review) -> str:
    return "\n".join(
        f"- [{i.severity}] {i.location}: {i.problem} Suggestion: {i.suggestion}"
        for i in review.issues
    )


def review_loop(model: str | None = None) -> Workflow[ReviewLoopState]:
    wf = Workflow(
        "review-loop",
        ReviewLoopState,
        max_steps=50,
        description="Draft, review, revise until approved or max_iterations.",
    )

    def client_of(ctx: NodeContext) -> LLMClient:
        if ctx.client is None:
            raise WorkflowError("review-loop needs an LLM client", run_id=ctx.run_id)
        return ctx.client

    async def write(state: ReviewLoopState, ctx: NodeContext) -> Drafted:
        agent = Agent("writer", WRITER, model=model)
        client = client_of(ctx)

        async def run() -> str:
            result = await agent.run(
                _writer_prompt(state), client=client, context=CallContext(run_id=ctx.run_id)
            )
            return result.output

        draft = await ctx.once("writer", run)
        return Drafted(draft=draft, iterations=state.iterations + 1)

    async def review(state: ReviewLoopState, ctx: NodeContext) -> Reviewed:
        instructions = render_instructions(
            "reviewer", task=state.task, code=state.draft, include_schema=False
        )
        # The rendered prompt holds the draft verbatim: pass it as a value so that braces in
        # the draft are never read as template syntax.
        agent = Agent("reviewer", "{{ deps }}", model=model, output_type=Review)
        client = client_of(ctx)

        async def run() -> dict[str, Any]:
            result = await agent.run(
                "Review the code above and reply with the JSON object.",
                client=client,
                deps=instructions,
                context=CallContext(run_id=ctx.run_id),
            )
            return result.output.model_dump(mode="json")

        verdict = Review.model_validate(await ctx.once("reviewer", run))
        return Reviewed(verdict=verdict.verdict, feedback=_feedback(verdict))

    wf.add_node("write", write)
    wf.add_node("review", review)
    wf.edge("write", "review")
    wf.route(
        "review",
        lambda s: END if s.verdict == "approve" or s.iterations >= s.max_iterations else "write",
        [END, "write"],
    )
    return wf
