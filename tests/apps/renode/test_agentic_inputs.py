"""What the renode workflow starts from: a request naming a shipped device, a described
register map (proposed by the model, then checked), and clear errors for empty or unknown
input."""

from __future__ import annotations

import json

import pytest
from _agentic import PLAN, fenced, run_renode

from arbor.apps.renode.regmap import RenodeError
from arbor.apps.renode.resolve import find_request, shipped_svds

USART = "generate a Renode model for USART1 of STM32F103xx"
MAP = {
    "peripheral": "uart0",
    "size": 64,
    "registers": [
        {"name": "DATA", "offset": 0, "fields": [{"name": "D", "bit_offset": 0, "bit_width": 8}]},
        {
            "name": "STATUS",
            "offset": 4,
            "access": "read-only",
            "fields": [
                {"name": "RXNE", "bit_offset": 0, "bit_width": 1, "access": "read-only"},
                {"name": "TXE", "bit_offset": 1, "bit_width": 1, "access": "read-only"},
            ],
        },
    ],
    "interrupts": ["UART0"],
}


def test_the_shipped_svds_and_their_licences_are_package_data() -> None:
    svds = shipped_svds()
    assert sorted(svds) == ["STM32F103xx", "nrf52840", "rp2040"]
    root = svds["rp2040"].parent
    assert (root / "LICENSE-RaspberryPi.txt").is_file()
    assert (root / "LICENSE-STMicro.html").is_file()


def test_requests_resolve_device_and_peripheral() -> None:
    svd, name = find_request(USART)
    assert (svd.stem, name) == ("STM32F103xx", "USART1")
    assert find_request("the UART0 of an rp2040 please")[1] == "UART0"
    assert find_request("stm32f103 usart2")[1] == "USART2"
    with pytest.raises(RenodeError, match="no known device named"):
        find_request("a model for USART1 of some chip")
    with pytest.raises(RenodeError, match="no peripheral of STM32F103xx named"):
        find_request("STM32F103xx, the thing with the buffers")


@pytest.mark.usefixtures("mcs")
async def test_a_chat_request_runs_on_the_shipped_svd() -> None:
    result, model = await run_renode(
        [PLAN, fenced("class Broken {")], {"task": USART, "max_iterations": 1}
    )
    assert result.status == "succeeded", result.error
    assert result.state.regmap["peripheral"] == "USART1"
    assert "class USART1" in result.state.output
    assert result.state.report["final"]["accuracy"]["score"] == 1.0
    model.assert_consumed()


@pytest.mark.usefixtures("mcs")
async def test_a_description_gets_a_proposed_map_then_the_loop() -> None:
    steps = [json.dumps(MAP), PLAN, fenced("class Nope {")]
    result, model = await run_renode(
        steps, {"description": "A UART: DATA at 0, STATUS at 4 ...", "max_iterations": 1}
    )
    assert result.status == "succeeded", result.error
    names = [r["name"] for r in result.state.regmap["registers"]]
    assert names == ["DATA", "STATUS"] and result.state.regmap["peripheral"] == "UART0"
    assert result.state.iterations[0].accuracy == 1.0
    assert "UART0" in result.state.output
    model.assert_consumed()


async def test_a_proposed_map_with_overlaps_is_refused() -> None:
    bad = {**MAP, "registers": [*MAP["registers"], {"name": "DUP", "offset": 4}]}
    result, _ = await run_renode([json.dumps(bad)], {"description": "a UART"})
    assert result.status == "failed"
    assert result.error is not None and "register DUP overlaps STATUS at 0x4" in result.error
    outside = {**MAP, "registers": [{"name": "FAR", "offset": 0x100}]}
    result, _ = await run_renode([json.dumps(outside)], {"description": "a UART"})
    assert result.error is not None and "outside the 0x40-byte block" in result.error


@pytest.mark.parametrize("state", [{}, {"task": "   "}, {"description": ""}])
async def test_empty_input_is_a_clear_error(state: dict[str, str]) -> None:
    result, model = await run_renode([], state)
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("renode: empty description")
    assert not model.calls
