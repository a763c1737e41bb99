"""The service's owner of workflow runs: starts them in background tasks it keeps, cancels
them, records approval decisions and resumes the run, and picks up runs a dead process left
behind.

A run's options (the model its agents use, the API key its calls are attributed to) are
written as the run's first event, the same ``cli_options`` event ``arbor run`` writes, so a
resume, whether by this server after a restart, after an approval, or by ``arbor run
--resume``, uses the same model and key. No migration is needed for that.

Shutdown (:meth:`RunManager.aclose`) stops the tasks without touching the runs' status: they
stay ``running``/``pending`` and :meth:`RunManager.resume_interrupted` continues them at the
next start, from their last checkpoint, without repeating completed nodes.

Several processes may serve one database. A process drives a run only while it holds the
run's lease (:mod:`arbor.runtime.run_leases`), taken atomically before it starts, renewed while
it runs and released when it stops; a run whose driver died is taken over by another process's
periodic sweep once the lease expires. Cancelling or deciding a run works from any process:
the driver notices a cancel before its next node (or at its next renewal) and stops.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from arbor.agents.workflow.checkpoints import RunEvent
from arbor.agents.workflow.graph import Workflow
from arbor.agents.workflow.registry import WorkflowFactory, WorkflowRegistry
from arbor.agents.workflow.runner import WorkflowRunner
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.core.clock import Clock
from arbor.core.errors import (
    ArborError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    WorkflowError,
)
from arbor.core.ids import new_owner
from arbor.core.logging import Redactor
from arbor.llm.client import LLMClient
from arbor.runtime.run_leases import LeaseKeeper
from arbor.store import RunRecord, RunStatus
from arbor.store.run_leases import RunLeases
from arbor.store.runs import TERMINAL_STATUSES

__all__ = [
    "OPTIONS_EVENT",
    "RunConflictError",
    "RunInputError",
    "RunManager",
    "RunOptions",
]

log = structlog.get_logger("arbor.runtime.runs")

#: The first event of a run, holding its options; the same name ``arbor run`` uses.
OPTIONS_EVENT = "cli_options"
_ACTIVE: tuple[RunStatus, ...] = ("pending", "running", "waiting_approval")
_WAITING: tuple[RunStatus, ...] = ("waiting_approval",)
_MODEL_ID = re.compile(r"^[A-Za-z0-9_.-]+:\S+$")
_REDACTOR = Redactor()


class RunInputError(InvalidRequestError):
    """A run was asked for with a bad workflow name, model id or input (422)."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class RunConflictError(ConflictError):
    """The run is not in a state that allows the operation (e.g. cancelling a finished run,
    approving a run that waits for nothing): 409."""

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What a run was started with; a resume reuses it."""

    model: str | None = None
    key_id: str | None = None


class RunManager:
    """Owns the background task of every run this process drives (one per run at most).

    ``workflows`` is the registry runs are started from; a mapping of factories means the
    installed workflows plus those (which win over installed ones of the same name), so
    tests and applications can serve their own graphs.

    A run is driven under a lease of ``lease_seconds`` held by ``owner`` (default: unique to
    this manager). With ``sweep_seconds``, :meth:`resume_interrupted` also starts a sweep
    that repeats it every ``sweep_seconds``, taking over runs whose driver died. ``clock``
    tells the time leases are stamped with and checked against (default: the system's); the
    renewals and sweeps still pace themselves in real time.
    """

    def __init__(
        self,
        store: SQLCheckpointStore,
        client: LLMClient | None,
        *,
        workflows: WorkflowRegistry | Mapping[str, WorkflowFactory] | None = None,
        lease_seconds: float = 30.0,
        sweep_seconds: float | None = None,
        owner: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be more than 0, not {lease_seconds}")
        if sweep_seconds is not None and not sweep_seconds > 0:
            raise ValueError(f"sweep_seconds must be more than 0, not {sweep_seconds}")
        self.store = store
        self.client = client
        self.leases = RunLeases(store.db, clock)
        self.owner = owner or new_owner()
        self.lease_seconds = lease_seconds
        self.sweep_seconds = sweep_seconds
        self.workflows = WorkflowRegistry.including(workflows)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    # ---- catalogue ----------------------------------------------------------------------
    def workflow_names(self) -> list[str]:
        return self.workflows.names()

    def workflow(self, name: str, model: str | None = None) -> Workflow[Any]:
        """The workflow ``name`` built for ``model``; NotFoundError naming the known ones."""
        return self.workflows.get(name, model)

    # ---- starting and driving -----------------------------------------------------------
    async def start(
        self,
        workflow: str,
        input: Mapping[str, Any],
        *,
        model: str | None = None,
        key_id: str | None = None,
    ) -> str:
        """Create a run and drive it in the background; returns its id at once.

        RunInputError for an unknown workflow, a malformed model id or an input that does
        not fit the workflow's state (nothing is stored then).
        """
        self._check_open()
        if model is not None and not _MODEL_ID.match(model):
            message = f"model must look like provider:model, got {model!r}"
            raise RunInputError(message, field="model")
        try:
            wf = self.workflow(workflow, model)
        except NotFoundError as exc:
            raise RunInputError(str(exc), field="workflow") from None
        state = _validate(wf.state_type, input)
        options = RunOptions(model, key_id)
        self._runner(wf, options)  # checks the graph before anything is stored
        # Created already leased to this process: no sweep elsewhere can take it first.
        lease = (self.owner, self.leases.now() + timedelta(seconds=self.lease_seconds))
        run = await self.store.runs.create(wf.name, state.model_dump(mode="json"), lease=lease)
        data = {"model": model, "key_id": key_id}
        await self.store.append_event(run.id, RunEvent(OPTIONS_EVENT, data=data))
        self._spawn(run.id, wf, options)
        return run.id

    async def resume(self, run_id: str) -> None:
        """Drive a stored, unfinished run again (with the options it was started with).
        RunConflictError if it is finished, or driven here or by another process."""
        self._check_open()
        if self.active(run_id):
            raise RunConflictError(f"run {run_id!r} is already running", run_id=run_id)
        run = await self.store.runs.get(run_id)
        if run.status in TERMINAL_STATUSES:
            raise RunConflictError(f"run {run_id!r} is {run.status}", run_id=run_id)
        options = await self.options(run_id)
        wf = self.workflow(run.workflow, options.model)  # NotFoundError before any lease
        if not await self.leases.acquire(run_id, self.owner, self.lease_seconds):
            raise RunConflictError(f"run {run_id!r} is being run by another process", run_id=run_id)
        self._spawn(run_id, wf, options)

    async def resume_interrupted(self) -> list[str]:
        """Resume every ``pending`` or ``running`` run nobody drives (no lease, or its
        holder died and the lease expired); returns their ids. Called at start-up; with
        ``sweep_seconds`` it then repeats in the background. Runs of workflows this server
        does not know are left alone, with a warning; runs another process took first are
        skipped."""
        resumed = await self._sweep_once(unleased=True)
        if self.sweep_seconds is not None and self._sweeper is None and not self._closed:
            self._sweeper = asyncio.create_task(self._sweep(self.sweep_seconds), name="run-sweep")
        return resumed

    async def _sweep_once(self, *, unleased: bool) -> list[str]:
        """Take over runs whose driver died; ``unleased`` (at start-up only) also takes runs
        that never had a lease (left by an older version, or by a process that drove them
        without one): later, such a run may be one a batch is driving right now."""
        resumed: list[str] = []
        for run_id in await self.leases.claimable(self.owner, unleased=unleased):
            if self.active(run_id):
                continue
            try:
                await self.resume(run_id)
            except NotFoundError as exc:
                log.warning("run.resume_skipped", run_id=run_id, reason=str(exc))
                continue
            except RunConflictError:  # another process took it (or it ended) meanwhile
                continue
            resumed.append(run_id)
        if resumed:
            log.info("run.resumed_interrupted", count=len(resumed), run_ids=resumed)
        return resumed

    async def _sweep(self, every: float) -> None:
        while not self._closed:
            await asyncio.sleep(every)
            try:
                await self._sweep_once(unleased=False)
            except Exception:  # the database hiccuped: try again next time
                log.warning("run.sweep_failed", exc_info=True)

    async def options(self, run_id: str) -> RunOptions:
        """The model and key a run was started with (both None if it has no options event,
        e.g. a run created by hand)."""
        for event in await self.store.event_log.list(run_id, limit=20):
            if event.type == OPTIONS_EVENT:
                model, key_id = event.data.get("model"), event.data.get("key_id")
                return RunOptions(
                    model if isinstance(model, str) else None,
                    key_id if isinstance(key_id, str) else None,
                )
        return RunOptions()

    def active(self, run_id: str) -> bool:
        """Whether this process is driving the run right now."""
        task = self._tasks.get(run_id)
        return task is not None and not task.done()

    def _runner(
        self, wf: Workflow[Any], options: RunOptions, keeper: LeaseKeeper | None = None
    ) -> WorkflowRunner[Any]:
        client = self.client.view(key_id=options.key_id) if self.client is not None else None
        plugins = [keeper] if keeper is not None else []
        return WorkflowRunner(wf, self.store, client=client, plugins=plugins)

    def _spawn(self, run_id: str, wf: Workflow[Any], options: RunOptions) -> None:
        """Drive the run in a task, under the lease this process already holds."""
        keeper = LeaseKeeper(self.leases, self.store, run_id, self.owner, self.lease_seconds)
        runner = self._runner(wf, options, keeper)
        task = asyncio.create_task(self._drive(runner, run_id, keeper), name=f"run:{run_id}")
        keeper.start(task)
        self._tasks[run_id] = task
        task.add_done_callback(lambda t: self._forget(run_id, t))

    def _forget(self, run_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(run_id) is task:
            del self._tasks[run_id]

    async def _drive(self, runner: WorkflowRunner[Any], run_id: str, keeper: LeaseKeeper) -> None:
        """Run to the next stop, then release the lease. A node's failure is recorded by
        the runner; anything that escapes it (the database went away, a bug) is logged and
        fails the run here, unless another process ended the run meanwhile. Cancellation
        propagates untouched: the caller decides what it means."""
        try:
            result = await runner.resume(run_id)
            log.info("run.stopped", run_id=run_id, status=result.status)
        except Exception as exc:
            if await self._ended_elsewhere(run_id, keeper):
                log.info("run.stopped_elsewhere", run_id=run_id, reason=str(exc))
                return
            log.exception("run.crashed", run_id=run_id)
            kind = exc.kind if isinstance(exc, ArborError) else type(exc).__name__
            # Shown by the API: scrubbed of anything secret-shaped (URLs with passwords...).
            await self._mark_failed(run_id, _REDACTOR.text(f"{kind}: {exc}"))
        finally:
            await keeper.stop()

    async def _ended_elsewhere(self, run_id: str, keeper: LeaseKeeper) -> bool:
        """Whether the run was taken over, cancelled or finished by another process (the
        runner's late write then failed: nothing to record)."""
        if keeper.lost:
            return True
        try:
            return (await self.store.runs.get(run_id)).status in TERMINAL_STATUSES
        except Exception:
            return False

    async def _mark_failed(self, run_id: str, message: str) -> None:
        try:
            run = await self.store.runs.get(run_id)
            if run.status in TERMINAL_STATUSES:
                return
            await self.store.append_event(run_id, RunEvent("run_failed", data={"error": message}))
            await self.store.runs.update(run_id, status="failed", error=message, only_from=_ACTIVE)
        except Exception:
            log.exception("run.mark_failed_failed", run_id=run_id)

    # ---- waiting, cancelling, deciding --------------------------------------------------
    # The contract's signature: a bound on waiting for a task, not on I/O.
    async def wait(
        self,
        run_id: str,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> RunRecord:
        """The run once this process stops driving it (finished, paused for approval,
        failed, cancelled), or as it is after ``timeout`` seconds; NotFoundError if unknown."""
        task = self._tasks.get(run_id)
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)
        return await self.store.runs.get(run_id)

    async def cancel(self, run_id: str) -> RunRecord:
        """Stop the run's task and mark it ``cancelled`` after a ``run_cancelled`` event;
        RunConflictError if it had already finished."""
        await self.store.runs.get(run_id)  # NotFoundError before anything is stopped
        await self._stop(run_id)
        run = await self.store.runs.get(run_id)
        if run.status in TERMINAL_STATUSES:
            raise RunConflictError(f"run {run_id!r} is already {run.status}", run_id=run_id)
        # The terminal event goes first: a watcher that sees the final status has it stored.
        await self.store.append_event(run_id, RunEvent("run_cancelled"))
        try:
            record = await self.store.runs.update(run_id, status="cancelled", only_from=_ACTIVE)
        except WorkflowError:  # another process finished it in between
            now = await self.store.runs.get(run_id)
            raise RunConflictError(
                f"run {run_id!r} is already {now.status}", run_id=run_id
            ) from None
        log.info("run.cancelled", run_id=run_id)
        return record

    async def decide(
        self, run_id: str, approved: bool, reason: str, by: str, *, node: str | None = None
    ) -> str:
        """Approve or reject the run's pending approval (of ``node``, default the latest
        one) as ``by``, then resume the run in the background; returns the node decided.
        RunConflictError if nothing (or not that node) is pending."""
        self._check_open()
        run = await self.store.runs.get(run_id)
        pending = await self.store.approvals.list(run_id=run_id, status="pending")
        if not pending or run.status != "waiting_approval":
            raise RunConflictError(
                f"run {run_id!r} has no pending approval (it is {run.status})", run_id=run_id
            )
        target = node or pending[-1].node
        if not any(a.node == target for a in pending):
            waiting = ", ".join(sorted({a.node for a in pending}))
            raise RunConflictError(
                f"run {run_id!r} has no pending approval for node {target!r} (pending: {waiting})",
                run_id=run_id,
            )
        if self.active(run_id):  # the task is still writing its pause: let it stop first
            await self.wait(run_id)
        await self.store.decide_approval(run_id, target, approved, reason, by=by)
        try:
            await self.resume(run_id)
        except RunConflictError:
            # Its driver elsewhere has not let go yet (it is still writing the pause): hand
            # the run to the sweeps, which continue it once that lease is released.
            await self.store.runs.update(run_id, status="pending", only_from=_WAITING)
            log.info("run.decided_resume_deferred", run_id=run_id)
        log.info("run.decided", run_id=run_id, node=target, approved=approved, by=by)
        return target

    # ---- events -------------------------------------------------------------------------
    async def watch(
        self, run_id: str, after_seq: int = 0, *, follow: bool = True
    ) -> AsyncGenerator[RunEvent, None]:
        """The run's events after ``after_seq`` in order; with ``follow`` it keeps waiting
        for new ones until the run ends. Delegates to the checkpoint store; close it
        (``aclosing``) when leaving early, which releases the store's subscription."""
        source = self.store.watch(run_id, after_seq, follow=follow)
        try:
            async for event in source:
                yield event
        finally:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()

    # ---- shutdown -----------------------------------------------------------------------
    async def aclose(self) -> None:
        """Stop every task without changing any run's status, so they resume next start."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _stop(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def _check_open(self) -> None:
        if self._closed:
            raise WorkflowError("the run manager is shut down")


def _validate(state_type: type[BaseModel], data: Mapping[str, Any]) -> BaseModel:
    try:
        return state_type.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        message = f"input does not fit the workflow's state: {problems}"
        raise RunInputError(message, field="input") from None
