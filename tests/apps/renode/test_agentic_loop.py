"""The renode workflow's gate with a scripted model: good edits kept, bad ones rejected with
their reason, the best version always the output, the loop bounded by its cap."""

from __future__ import annotations

from pathlib import Path

import pytest
from _agentic import APPROVE, PLAN, REVISE, fenced, run_renode, skeleton, with_behaviour

pytestmark = pytest.mark.usefixtures("mcs")


async def test_a_good_edit_is_accepted(small_svd: Path) -> None:
    base = skeleton(small_svd, "TIMER0")
    good = with_behaviour(base)
    result, model = await run_renode(
        [PLAN, fenced(good), APPROVE], {"svd": str(small_svd), "peripheral": "TIMER0"}
    )
    assert result.status == "succeeded", result.error
    state = result.state
    assert state.output == good.strip() + "\n"
    assert "UpdateInterrupts" in state.output
    assert [a.accepted for a in state.iterations] == [True, True]
    assert state.iterations[1].accuracy == 1.0 and state.iterations[1].compile_errors == 0
    assert state.report["final"]["accuracy"]["score"] == 1.0
    assert state.report["accepted_iterations"] == [1]
    model.assert_consumed()


async def test_a_broken_edit_is_rejected_and_the_best_kept(small_svd: Path) -> None:
    base = skeleton(small_svd, "TIMER0")
    good = with_behaviour(base)
    no_compile = good.replace("IRQ.Set(false);", "IRQ.Set(false);\n            Missing();")
    no_parse = good.replace("IRQ.Set(false);", "IRQ.Set(false")
    steps = [PLAN, fenced(good), REVISE, fenced(no_compile), fenced(no_parse)]
    result, _ = await run_renode(
        steps, {"svd": str(small_svd), "peripheral": "TIMER0", "max_iterations": 3}
    )
    assert result.status == "succeeded", result.error
    its = result.state.iterations
    assert [a.accepted for a in its] == [True, True, False, False]
    assert its[2].reason.startswith("compile failed: ") and "CS0103" in its[2].reason
    assert "line" in its[2].reason
    assert its[3].reason.startswith("syntax errors")
    assert its[1].review  # the reviewer's notes are recorded on the accepted version
    assert result.state.output == good.strip() + "\n"


async def test_an_edit_that_drops_a_register_is_rejected(small_svd: Path) -> None:
    base = skeleton(small_svd, "TIMER0")
    lines = base.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "Registers.FLAGS.Define" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith(";"))
    dropped = "".join(lines[:start] + lines[end + 1 :])
    result, model = await run_renode(
        [PLAN, fenced(dropped)],
        {"svd": str(small_svd), "peripheral": "TIMER0", "max_iterations": 1},
    )
    assert result.status == "succeeded", result.error
    last = result.state.iterations[-1]
    assert not last.accepted and last.reason.startswith("accuracy ") and "< 1.00" in last.reason
    assert result.state.output == base
    model.assert_consumed()


async def test_the_loop_stops_at_its_cap_and_feeds_back_the_reason(small_svd: Path) -> None:
    broken = fenced("public class Nope {")
    result, model = await run_renode(
        [PLAN, broken, broken], {"svd": str(small_svd), "peripheral": "TIMER0", "max_iterations": 2}
    )
    assert result.status == "succeeded", result.error
    assert len(result.state.iterations) == 3
    assert not any(a.accepted for a in result.state.iterations[1:])
    second = model.calls[2].messages[-1].content or ""
    assert "was rejected: syntax errors" in second
    assert result.state.output == skeleton(small_svd, "TIMER0")
    assert result.state.report["stage"].startswith("deterministic skeleton")
    model.assert_consumed()


async def test_retrieved_context_reaches_planner_and_coder(
    small_svd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from arbor.apps.renode import retrieval

    asked: list[str] = []

    def fetch(query: str) -> str:
        asked.append(query)
        return "Example: NRF_UART.cs defines UpdateInterrupts()"

    monkeypatch.setattr(retrieval, "fetch_context", fetch)
    result, model = await run_renode(
        [PLAN, fenced("class Broken {")],
        {"svd": str(small_svd), "peripheral": "TIMER0", "max_iterations": 1},
    )
    assert result.status == "succeeded", result.error
    assert len(asked) == 1 and asked[0].startswith("TIMER0")
    for call in model.calls:
        assert "Example: NRF_UART.cs" in (call.messages[-1].content or "")


async def test_no_retrieval_store_means_no_context(small_svd: Path) -> None:
    result, model = await run_renode(
        [PLAN, fenced("class Broken {")],
        {"svd": str(small_svd), "peripheral": "TIMER0", "max_iterations": 1},
    )
    assert result.status == "succeeded", result.error
    assert result.state.context == ""
    assert "Reference material" not in (model.calls[1].messages[-1].content or "")
