"""Built-in roles: templates ship as package data, render strictly, match their outputs."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import jinja2
import pytest
from jinja2 import meta
from pydantic import BaseModel, ValidationError

from arbor.agents import roles
from arbor.agents.roles import (
    ROLE_NAMES,
    ROLES,
    Role,
    RoleRenderer,
    RoleTemplateError,
    UnknownRoleError,
    get_role,
    list_roles,
    render_instructions,
)
from arbor.agents.roles import outputs as out
from arbor.core.errors import ArborError, NotFoundError

EXPECTED = {
    "planner": out.Plan,
    "coder": out.CodeDraft,
    "reviewer": out.Review,
    "accuracy_checker": out.AccuracyReport,
    "router": out.RouteDecision,
    "business_analyst": out.Requirements,
    "developer": out.CodeDraft,
    "qa_engineer": out.TestSuite,
    "devops_engineer": out.DevOpsFiles,
    "technical_writer": out.Docs,
}

ROUTES = {"coder": "fix the code", "done": "finish the run"}


def sample_variables(role: Role, *, optional: bool = True) -> dict[str, Any]:
    names = role.variables if optional else role.required
    values: dict[str, Any] = {name: f"<<{name.upper()}-VALUE>>" for name in names}
    if "routes" in values:
        values["routes"] = ROUTES
    return values


def example_json(text: str) -> Any:
    blocks = re.findall(r"```json\n(.*?)\n```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "each template shows exactly one JSON example"
    return json.loads(blocks[0])


def templates_dir() -> Any:
    return resources.files("arbor.agents.roles") / "templates"


# --- the catalogue -------------------------------------------------------------------------


def test_role_catalogue() -> None:
    assert set(ROLE_NAMES) == set(EXPECTED)
    assert [r.name for r in list_roles()] == list(ROLE_NAMES)
    for name, output_type in EXPECTED.items():
        role = get_role(name)
        assert role.output_type is output_type
        assert role.template_name == f"{name}.md.j2"
        assert 0.0 <= role.default_temperature <= 1.0
        assert role.required, f"{name} needs at least one input"
        assert len(role.description) > 20


def test_roles_are_immutable() -> None:
    role = get_role("planner")
    with pytest.raises(AttributeError):
        role.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ROLES["x"] = role  # type: ignore[index]


def test_unknown_role_names_the_known_ones() -> None:
    with pytest.raises(UnknownRoleError) as info:
        get_role("architect")
    err = info.value
    assert isinstance(err, NotFoundError) and isinstance(err, ArborError)
    assert err.role == "architect"
    assert err.known == ROLE_NAMES
    assert "'architect'" in str(err) and "planner" in str(err) and "technical_writer" in str(err)
    with pytest.raises(UnknownRoleError):
        render_instructions("architect", task="x")


def test_public_api() -> None:
    assert sorted(roles.__all__) == roles.__all__
    assert sorted(out.__all__) == out.__all__
    for name in roles.__all__ + out.__all__:
        assert hasattr(roles, name) or hasattr(out, name)


# --- package data --------------------------------------------------------------------------


def test_templates_found_through_importlib_resources() -> None:
    folder = templates_dir()
    assert folder.is_dir()
    shipped = {entry.name for entry in folder.iterdir() if entry.name.endswith(".md.j2")}
    for role in list_roles():
        assert role.template_name in shipped
        assert (folder / role.template_name).read_text(encoding="utf-8").startswith("# Role:")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_template_uses_only_declared_variables(name: str) -> None:
    """What a template reads is exactly what its role declares (plus the renderer's schema)."""
    role = get_role(name)
    source = (templates_dir() / role.template_name).read_text(encoding="utf-8")
    used = meta.find_undeclared_variables(jinja2.Environment().parse(source))
    assert used == set(role.variables), f"{name}: template uses {sorted(used)}"
    partial = (templates_dir() / "_output.md.j2").read_text(encoding="utf-8")
    assert meta.find_undeclared_variables(jinja2.Environment().parse(partial)) == {"output_schema"}


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_role_renders_inputs_and_output_fields(name: str) -> None:
    role = get_role(name)
    variables = sample_variables(role)
    text = render_instructions(role, include_schema=False, **variables)
    for var, value in variables.items():
        if var == "routes":
            assert "- coder: fix the code" in text and "- done: finish the run" in text
        else:
            assert f"<{var}>\n{value}\n</{var}>" in text, f"{name}: {var} not delimited"
    for field in role.output_type.model_fields:
        assert f"`{field}`" in text or f'"{field}"' in text, f"{name}: {field} not described"
    assert "exactly one JSON object" in text
    assert "{{" not in text and "{%" not in text
    assert text.endswith("\n")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_required_only_renders_without_optional_sections(name: str) -> None:
    role = get_role(name)
    text = render_instructions(name, include_schema=False, **sample_variables(role, optional=False))
    for var in role.optional:
        assert f"<{var}>" not in text
        assert "\nNone\n" not in text


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_in_prompt_validates_against_output_model(name: str) -> None:
    role = get_role(name)
    text = render_instructions(role, include_schema=False, **sample_variables(role))
    example = example_json(text)
    parsed = role.output_type.model_validate(example)
    assert role.output_type.model_validate_json(parsed.model_dump_json()) == parsed


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schema_included_on_request(name: str) -> None:
    role = get_role(name)
    text = render_instructions(role, **sample_variables(role))
    assert json.dumps(role.output_schema(), sort_keys=True) in text
    assert "JSON schema of the reply" in text
    assert "JSON schema" not in render_instructions(
        role, include_schema=False, **sample_variables(role)
    )


def test_missing_variable_names_it_and_the_role() -> None:
    with pytest.raises(RoleTemplateError) as info:
        render_instructions("reviewer", task="Add a FIFO")
    err = info.value
    assert (err.role, err.variable) == ("reviewer", "code")
    assert "'code'" in str(err) and "'reviewer'" in str(err)
    with pytest.raises(RoleTemplateError, match="'task'"):
        render_instructions("planner", task=None)


def test_unknown_and_reserved_variables_are_refused() -> None:
    with pytest.raises(RoleTemplateError) as info:
        render_instructions("planner", task="x", feedbak="typo")
    assert info.value.variable == "feedbak"
    assert "context" in str(info.value)
    with pytest.raises(RoleTemplateError, match="output_schema"):
        RoleRenderer().render("planner", {"task": "x", "output_schema": "mine"})


def test_values_are_data_not_templates() -> None:
    """Jinja syntax inside a variable is printed, never evaluated."""
    text = render_instructions("planner", task="{{ 7 * 7 }} {% for x in y %}", context="")
    assert "{{ 7 * 7 }} {% for x in y %}" in text
    assert "49" not in text


def test_renderer_reuses_compiled_templates() -> None:
    renderer = RoleRenderer()
    first = renderer.render("coder", {"task": "a"})
    assert renderer.render("coder", {"task": "a"}) == first
    assert render_instructions("coder", task="a") == first


def test_router_accepts_a_list_of_routes() -> None:
    text = render_instructions("router", include_schema=False, task="t", routes=["coder", "done"])
    assert "- coder\n- done\n" in text


# --- output models -------------------------------------------------------------------------

FILE = {"path": "src/a.py", "content": "x = 1\n"}

VALID: dict[type[BaseModel], dict[str, Any]] = {
    out.Plan: {
        "steps": [
            {"title": "A", "detail": "do a"},
            {"title": "B", "detail": "do b", "depends_on": [1]},
        ],
        "risks": ["unclear"],
    },
    out.CodeDraft: {"files": [FILE], "rationale": "because"},
    out.Review: {
        "verdict": "revise",
        "issues": [{"severity": "major", "location": "a.py:1", "problem": "p", "suggestion": "s"}],
        "summary": "needs work",
    },
    out.AccuracyReport: {
        "score": 0.5,
        "checks": [
            {"name": "a", "passed": True, "detail": "ok"},
            {"name": "b", "passed": False, "detail": "off"},
        ],
        "summary": "half",
    },
    out.RouteDecision: {"next": "coder", "reason": "failed", "confidence": 0.8},
    out.Requirements: {
        "summary": "a tool",
        "user_stories": [
            {"as_a": "u", "i_want": "w", "so_that": "s", "acceptance_criteria": ["given x"]}
        ],
    },
    out.TestSuite: {"files": [FILE], "how_to_run": "python -m pytest -q"},
    out.DevOpsFiles: {
        "files": [{"path": "Makefile", "content": "test:\n\tpytest\n"}],
        "notes": "n",
    },
    out.Docs: {"files": [{"path": "README.md", "content": "# x\n"}], "summary": "s"},
}


def test_every_output_model_has_a_valid_example() -> None:
    assert set(VALID) == set(EXPECTED.values())


@pytest.mark.parametrize("model", list(VALID), ids=lambda m: m.__name__)
def test_output_schema_is_valid_and_round_trips(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    json.dumps(schema)  # serialisable as sent to a model

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                assert prop.get("description"), f"{model.__name__}.{name} lacks a description"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    instance = model.model_validate(VALID[model])
    assert model.model_validate_json(instance.model_dump_json()) == instance
    assert model.model_validate(instance.model_dump(mode="json")) == instance


def _with(model: type[BaseModel], **changes: Any) -> dict[str, Any]:
    return {**VALID[model], **changes}


INVALID = [
    pytest.param(out.AccuracyReport, _with(out.AccuracyReport, score=1.5), id="score-above-1"),
    pytest.param(out.AccuracyReport, _with(out.AccuracyReport, score=-0.1), id="score-below-0"),
    pytest.param(out.AccuracyReport, _with(out.AccuracyReport, checks=[]), id="no-checks"),
    pytest.param(out.Plan, _with(out.Plan, steps=[]), id="empty-steps"),
    pytest.param(
        out.Plan,
        _with(out.Plan, steps=[{"title": "A", "detail": "d", "depends_on": [1]}]),
        id="self-dependency",
    ),
    pytest.param(
        out.Plan,
        _with(
            out.Plan,
            steps=[{"title": "A", "detail": "d", "depends_on": [2]}, VALID[out.Plan]["steps"][0]],
        ),
        id="forward-dependency",
    ),
    pytest.param(
        out.Plan, _with(out.Plan, steps=[{"title": " ", "detail": "d"}]), id="blank-title"
    ),
    pytest.param(out.Review, _with(out.Review, verdict="maybe"), id="bad-verdict"),
    pytest.param(out.Review, _with(out.Review, issues=[]), id="revise-without-issues"),
    pytest.param(
        out.Review,
        _with(
            out.Review,
            verdict="approve",
            issues=[{"severity": "blocker", "location": "l", "problem": "p", "suggestion": "s"}],
        ),
        id="approve-with-blocker",
    ),
    pytest.param(
        out.Review,
        _with(
            out.Review,
            verdict="approve",
            issues=[{"severity": "major", "location": "l", "problem": "p", "suggestion": "s"}],
        ),
        id="approve-with-major",
    ),
    pytest.param(
        out.Review,
        _with(
            out.Review,
            issues=[{"severity": "fatal", "location": "l", "problem": "p", "suggestion": "s"}],
        ),
        id="bad-severity",
    ),
    pytest.param(out.RouteDecision, _with(out.RouteDecision, confidence=1.01), id="confidence"),
    pytest.param(out.RouteDecision, _with(out.RouteDecision, next=""), id="empty-route"),
    pytest.param(out.CodeDraft, _with(out.CodeDraft, files=[]), id="no-files"),
    pytest.param(out.CodeDraft, _with(out.CodeDraft, files=[FILE, FILE]), id="duplicate-paths"),
    pytest.param(out.CodeDraft, _with(out.CodeDraft, extra="x"), id="extra-field"),
    pytest.param(
        out.Requirements,
        _with(
            out.Requirements,
            user_stories=[{"as_a": "u", "i_want": "w", "so_that": "s", "acceptance_criteria": []}],
        ),
        id="story-without-criteria",
    ),
    pytest.param(out.Requirements, _with(out.Requirements, user_stories=[]), id="no-stories"),
    pytest.param(out.TestSuite, _with(out.TestSuite, how_to_run=""), id="no-command"),
    pytest.param(out.Docs, _with(out.Docs, files=[]), id="no-docs"),
]


@pytest.mark.parametrize(("model", "data"), INVALID)
def test_invalid_outputs_fail_validation(model: type[BaseModel], data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../x.py", "a/../../x", "C:\\x.py", "\\\\host\\x", "a\0b", "src/", ""]
)
def test_file_paths_must_be_relative_and_inside(path: str) -> None:
    with pytest.raises(ValidationError):
        out.FileSpec(path=path, content="")


def test_file_content_is_kept_verbatim() -> None:
    spec = out.FileSpec(path="Makefile", content="test:\n\tpytest\n\n")
    assert spec.content == "test:\n\tpytest\n\n"


def test_route_decision_checks_routes_from_context() -> None:
    data = VALID[out.RouteDecision]
    assert out.RouteDecision.model_validate(data, context={"routes": ["coder"]}).next == "coder"
    with pytest.raises(ValidationError, match="choose one of: reviewer, done"):
        out.RouteDecision.model_validate(data, context={"routes": ["reviewer", "done"]})


def test_review_approve_allows_only_minor_issues() -> None:
    nit = {"severity": "nit", "location": "l", "problem": "p", "suggestion": "s"}
    assert out.Review(verdict="approve", summary="fine").issues == []
    approved = out.Review.model_validate({"verdict": "approve", "issues": [nit], "summary": "ok"})
    assert approved.issues[0].severity == "nit"
