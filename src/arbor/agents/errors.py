"""Why an agent run produced no output.

The loop raises these and :class:`~arbor.agents.agent.Agent` re-exports them; they sit in
their own module so the loop needs nothing from the agent module::

    ArborError
    └── AgentError               a run could not produce an output (carries agent, run_id)
        ├── InstructionsError    the instructions template failed to render
        ├── MaxStepsExceededError  still calling tools after max_steps model calls
        └── OutputValidationError  output invalid after max_output_retries re-asks
"""

from __future__ import annotations

from arbor.core.errors import ArborError

__all__ = [
    "AgentError",
    "InstructionsError",
    "MaxStepsExceededError",
    "OutputValidationError",
]


class AgentError(ArborError):
    """``agent`` is the agent's name, ``run_id`` the run's id ('' when unknown)."""

    kind = "agent"

    def __init__(self, message: str, *, agent: str = "", run_id: str = "") -> None:
        super().__init__(message)
        self.agent = agent
        self.run_id = run_id


class InstructionsError(AgentError):
    kind = "instructions"


class MaxStepsExceededError(AgentError):
    """``max_steps`` is the agent's cap on tool-calling model calls."""

    kind = "max_steps"

    def __init__(self, message: str, *, max_steps: int, agent: str = "", run_id: str = ""):
        super().__init__(message, agent=agent, run_id=run_id)
        self.max_steps = max_steps


class OutputValidationError(AgentError):
    """``last_output`` is the model's last reply, ``attempts`` how many replies were tried."""

    kind = "output_invalid"

    def __init__(
        self, message: str, *, last_output: str, attempts: int, agent: str = "", run_id: str = ""
    ) -> None:
        super().__init__(message, agent=agent, run_id=run_id)
        self.last_output = last_output
        self.attempts = attempts
