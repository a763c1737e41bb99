"""The team workflow's state and its final report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from arbor.agents.roles.outputs import FileSpec, Requirements

__all__ = [
    "Analysed",
    "Developed",
    "FailedTest",
    "Iteration",
    "Published",
    "Reported",
    "RoleUsage",
    "TeamReport",
    "TeamState",
    "Tested",
]

MAX_ITERATIONS = 10


class RoleUsage(BaseModel):
    """Tokens and cost of one agent run."""

    role: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0


class FailedTest(BaseModel):
    name: str
    outcome: str
    message: str = ""


class Iteration(BaseModel):
    """One sandboxed test run of the developer's code."""

    number: int
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    ok: bool = False
    #: Why no test results exist (no tests, pytest wrote no report, sandbox unavailable).
    problem: str | None = None
    #: True isolated, False unisolated (allowed by config), None when nothing ran.
    isolated: bool | None = None
    failures: list[FailedTest] = Field(default_factory=list)
    seconds: float = 0.0


class TeamReport(BaseModel):
    ok: bool
    workspace: str
    files: list[str]
    iterations: list[Iteration]
    iteration_count: int
    isolation: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    usage: list[RoleUsage]
    notes: list[str] = Field(default_factory=list)
    published_to: str | None = None


class TeamState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=8000, description="What to build.")
    max_iterations: int = Field(default=3, ge=1, le=MAX_ITERATIONS)
    #: Copy the result out of the workspace once someone approves it (an approval node).
    publish: bool = False
    #: Cap on each agent reply (small local models ramble).
    max_tokens: int | None = Field(default=None, ge=16, le=32_768)

    workspace: str = ""
    requirements: Requirements | None = None
    requirements_text: str = ""
    code_files: list[FileSpec] = Field(default_factory=list)
    test_files: list[FileSpec] = Field(default_factory=list)
    devops_files: list[FileSpec] = Field(default_factory=list)
    doc_files: list[FileSpec] = Field(default_factory=list)
    feedback: str = ""
    iterations: list[Iteration] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    # Parallel branches each own a field: deltas of concurrent nodes must not overlap.
    usage: list[RoleUsage] = Field(default_factory=list)
    qa_usage: list[RoleUsage] = Field(default_factory=list)
    qa_notes: list[str] = Field(default_factory=list)
    devops_usage: list[RoleUsage] = Field(default_factory=list)
    devops_notes: list[str] = Field(default_factory=list)
    approved: bool | None = None
    approval_reason: str | None = None
    published_to: str | None = None
    report: TeamReport | None = None


# ---- what the nodes return: partial updates of TeamState (only the fields set apply) ----


class Analysed(BaseModel):
    """The analyst's update: the workspace, the requirements (or the prompt as them)."""

    workspace: str
    requirements: Requirements | None = None
    requirements_text: str
    usage: list[RoleUsage]
    notes: list[str] = Field(default_factory=list)


class Developed(BaseModel):
    """The developer's (and the fixer's) update: the code files so far."""

    code_files: list[FileSpec]
    usage: list[RoleUsage]
    notes: list[str]


class Tested(BaseModel):
    """One sandboxed test run and the feedback for the next fix."""

    iterations: list[Iteration]
    feedback: str


class Reported(BaseModel):
    report: TeamReport


class Published(BaseModel):
    report: TeamReport
    published_to: str
