"""The whole renode loop on the embedded SmolLM2-135M (CPU): a tiny peripheral, two
iterations, short replies. A model this small rarely writes a C# model that builds; what must
hold is that the run ends cleanly and the gate never lets the result fall below the skeleton."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from arbor.agents.workflow import InMemoryCheckpointStore, WorkflowRunner
from arbor.apps.renode.workflow import renode_workflow
from arbor.core.config import Settings
from arbor.llm.client import LLMClient

TINY_SVD = """<?xml version="1.0" encoding="utf-8"?>
<device schemaVersion="1.3">
  <name>TINY</name>
  <width>32</width><size>32</size><access>read-write</access>
  <resetValue>0</resetValue><resetMask>0xFFFFFFFF</resetMask>
  <peripherals>
    <peripheral>
      <name>LED</name>
      <baseAddress>0x40000000</baseAddress>
      <addressBlock><offset>0</offset><size>0x8</size><usage>registers</usage></addressBlock>
      <registers>
        <register>
          <name>CTRL</name><addressOffset>0x0</addressOffset>
          <fields><field><name>ON</name><bitOffset>0</bitOffset><bitWidth>1</bitWidth></field>
          </fields>
        </register>
      </registers>
    </peripheral>
  </peripherals>
</device>
"""


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.usefixtures("mcs")
async def test_smollm2_runs_the_loop_and_never_loses_accuracy(tmp_path: Path) -> None:
    svd = tmp_path / "tiny.svd"
    svd.write_text(TINY_SVD, encoding="utf-8")
    state = {"svd": str(svd), "peripheral": "LED", "max_iterations": 2, "max_tokens": 64}
    started = time.perf_counter()
    async with LLMClient(Settings(llm={"cache": {"enabled": False}})) as client:
        runner = WorkflowRunner(
            renode_workflow("local:smollm2"), InMemoryCheckpointStore(), client=client
        )
        result = await runner.start(state)
    elapsed = time.perf_counter() - started
    assert result.status == "succeeded", result.error
    its = result.state.iterations
    assert 2 <= len(its) <= 3  # the skeleton, then at most two coder iterations
    assert all(a.reason for a in its)
    final = result.state.report["final"]
    assert final["syntax"]["passed"] and final["compile"]["passed"]
    assert final["accuracy"]["score"] >= its[0].accuracy == 1.0
    assert result.state.output.strip()
    assert elapsed < 180, f"took {elapsed:.0f}s"
