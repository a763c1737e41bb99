"""Structured outputs of the built-in roles.

Each model is what one role must reply with; its JSON schema (field descriptions included) is
what the model sees, and validation failures are what a bounded re-ask sends back. Models are
strict (``extra="forbid"``) so a misspelt key is an error, not silently dropped data.

Checks that need the caller's knowledge take it from pydantic's validation context:
``RouteDecision.model_validate(data, context={"routes": ["coder", "reviewer"]})`` refuses a
route that is not offered.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "AccuracyReport",
    "Check",
    "CodeDraft",
    "DevOpsFiles",
    "Docs",
    "FileSpec",
    "Plan",
    "PlanStep",
    "Requirements",
    "Review",
    "ReviewIssue",
    "RouteDecision",
    "TestSuite",
    "UserStory",
]

#: Non-blank text; surrounding whitespace is stripped.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Severity = Literal["blocker", "major", "minor", "nit"]

_MAX_PATH = 255


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileSpec(_Output):
    """One whole file, written verbatim. Workspaces re-check paths; this refuses the obvious."""

    path: str = Field(
        min_length=1,
        max_length=_MAX_PATH,
        description="Relative POSIX path of the file, e.g. 'src/app/main.py'. "
        "Never absolute, never containing '..'.",
    )
    content: str = Field(
        description="The complete file content, exactly as it must be written (not a diff, "
        "no Markdown fences around it)."
    )

    @field_validator("path")
    @classmethod
    def _relative_path(cls, path: str) -> str:
        if "\0" in path:
            raise ValueError("path contains a NUL byte")
        if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
            raise ValueError(f"path must be relative, got {path!r}")
        parts = path.replace("\\", "/").split("/")
        if ".." in parts:
            raise ValueError(f"path must not contain '..', got {path!r}")
        if path.endswith(("/", "\\")):
            raise ValueError(f"path must name a file, not a directory, got {path!r}")
        return path


def _unique_paths(files: list[FileSpec]) -> list[FileSpec]:
    seen: set[str] = set()
    for spec in files:
        if spec.path in seen:
            raise ValueError(f"file {spec.path!r} appears more than once")
        seen.add(spec.path)
    return files


#: Files with distinct paths.
Files = Annotated[list[FileSpec], AfterValidator(_unique_paths)]


class PlanStep(_Output):
    title: Text = Field(description="Short imperative name of the step, e.g. 'Add RX FIFO'.")
    detail: Text = Field(
        description="What to do and how to tell it is done, specific enough for the coder."
    )
    depends_on: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        description="1-based numbers of earlier steps this step needs; empty if none.",
    )


class Plan(_Output):
    """The planner's reply: ordered steps, each depending only on earlier ones."""

    steps: list[PlanStep] = Field(
        min_length=1, description="Ordered steps; step 1 comes first. At least one."
    )
    risks: list[Text] = Field(
        default_factory=list,
        description="Things that could go wrong or are unclear in the task; empty if none.",
    )

    @model_validator(mode="after")
    def _dependencies_point_backwards(self) -> Plan:
        for number, step in enumerate(self.steps, start=1):
            for dep in step.depends_on:
                if dep >= number:
                    raise ValueError(
                        f"step {number} ({step.title!r}) depends on step {dep}; "
                        "a step may only depend on earlier steps"
                    )
        return self


class CodeDraft(_Output):
    """The coder's or developer's reply: whole files plus why they look the way they do."""

    files: Files = Field(
        min_length=1, description="Every file created or changed, each in full. At least one."
    )
    rationale: Text = Field(
        description="Why the code is written this way: decisions, assumptions, and how each "
        "piece of feedback was addressed."
    )


class ReviewIssue(_Output):
    severity: Severity = Field(
        description="'blocker': wrong or unsafe, must be fixed; 'major': a real defect; "
        "'minor': worth fixing; 'nit': style only."
    )
    location: Text = Field(
        description="Where the problem is: file and line, function, or register name."
    )
    problem: Text = Field(description="What is wrong and why it matters.")
    suggestion: Text = Field(description="What the author should change, in words, not code.")


class Review(_Output):
    """The reviewer's verdict: 'revise' needs an issue; 'approve' allows only minor and nit ones."""

    verdict: Literal["approve", "revise"] = Field(
        description="'approve' if the code can ship as is, otherwise 'revise'."
    )
    issues: list[ReviewIssue] = Field(
        default_factory=list, description="Every problem found, most severe first."
    )
    summary: Text = Field(description="Two or three sentences on the overall state of the code.")

    @model_validator(mode="after")
    def _verdict_matches_issues(self) -> Review:
        if self.verdict == "revise" and not self.issues:
            raise ValueError("verdict 'revise' needs at least one issue")
        blocking = [i for i in self.issues if i.severity in ("blocker", "major")]
        if self.verdict == "approve" and blocking:
            raise ValueError(
                f"verdict 'approve' is not allowed while a {blocking[0].severity} issue is open"
            )
        return self


class Check(_Output):
    name: Text = Field(description="What was checked, e.g. 'CR1 reset value'.")
    passed: bool = Field(description="True if the code matches the specification here.")
    detail: Text = Field(
        description="Evidence: what the specification says and what the code does."
    )


class AccuracyReport(_Output):
    """The accuracy checker's reply: a score in [0, 1] and the checks behind it."""

    score: float = Field(
        ge=0.0,
        le=1.0,
        description="Fraction of the specification the code gets right, from 0.0 to 1.0; "
        "normally passed checks / all checks.",
    )
    checks: list[Check] = Field(
        min_length=1, description="Each individual check performed. At least one."
    )
    summary: Text = Field(description="The most important mismatches, in one short paragraph.")


class RouteDecision(_Output):
    """The router's choice of the next node. Pass ``context={"routes": [...]}`` to enforce it."""

    next: Text = Field(description="Name of the next route, exactly as listed in the routes.")
    reason: Text = Field(description="One or two sentences on why this route, citing the state.")
    confidence: float = Field(
        ge=0.0, le=1.0, description="How sure the choice is right, from 0.0 to 1.0."
    )

    @field_validator("next")
    @classmethod
    def _known_route(cls, value: str, info: ValidationInfo) -> str:
        routes = info.context.get("routes") if isinstance(info.context, dict) else None
        if routes is not None and value not in routes:
            raise ValueError(f"unknown route {value!r}; choose one of: {', '.join(routes)}")
        return value


class UserStory(_Output):
    as_a: Text = Field(description="The kind of user, e.g. 'registered customer'.")
    i_want: Text = Field(description="What that user wants to do.")
    so_that: Text = Field(description="The benefit the user gets.")
    acceptance_criteria: list[Text] = Field(
        min_length=1,
        description="Testable conditions (Given/When/Then or a concrete check). At least one.",
    )


class Requirements(_Output):
    """The business analyst's reply: INVEST user stories and the limits of the project."""

    summary: Text = Field(
        description="What is being built and for whom, in two or three sentences."
    )
    user_stories: list[UserStory] = Field(
        min_length=1, description="User stories, most important first. At least one."
    )
    non_functional: list[Text] = Field(
        default_factory=list,
        description="Measurable constraints: performance, security, platform, dependencies.",
    )
    out_of_scope: list[Text] = Field(
        default_factory=list, description="Things explicitly not being built in this project."
    )


class TestSuite(_Output):
    """The QA engineer's reply: pytest files and the command that runs them."""

    __test__ = False  # a pydantic model, not a pytest test class

    files: Files = Field(
        min_length=1, description="Test files in full, e.g. 'tests/test_core.py'. At least one."
    )
    how_to_run: Text = Field(
        description="The single shell command that runs the tests from the project root, "
        "e.g. 'python -m pytest -q'."
    )
    coverage: list[Text] = Field(
        default_factory=list,
        description="Which acceptance criteria or behaviours the tests cover, one per entry.",
    )


class DevOpsFiles(_Output):
    """The DevOps engineer's reply: build, container and CI files."""

    files: Files = Field(
        min_length=1,
        description="Files such as 'Makefile', 'Dockerfile', '.github/workflows/ci.yml', "
        "in full. At least one.",
    )
    notes: Text = Field(description="How to build, test and run the project with these files.")


class Docs(_Output):
    """The technical writer's reply: documentation files, README.md first."""

    files: Files = Field(
        min_length=1, description="Documentation files in full, README.md first. At least one."
    )
    summary: Text = Field(description="One sentence on what the documentation covers.")
