"""An in-memory Orchestrator: one run per idempotency key, states set by the test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edge.ports import OrchestratorRejected, RunPhase, RunState


class InMemoryOrchestrator:
    """Records submissions; every run stays SCHEDULED until `set_state` says otherwise."""

    def __init__(self) -> None:
        self.runs: dict[str, RunState] = {}
        self.by_key: dict[str, str] = {}
        self.submitted: list[Mapping[str, object]] = []
        self.resumed: list[tuple[str, Mapping[str, object]]] = []
        #: What a suspended run stored as its question, by (run, question id).
        self.questions: dict[tuple[str, str], dict[str, Any]] = {}

    async def submit(
        self,
        deployment: str,
        *,
        parameters: Mapping[str, object],
        idempotency_key: str,
        tags: Sequence[str] = (),
    ) -> RunState:
        if idempotency_key not in self.by_key:
            run_id = f"run-{len(self.runs) + 1}"
            self.by_key[idempotency_key] = run_id
            self.runs[run_id] = RunState(run_id, RunPhase.QUEUED, "Scheduled")
            self.submitted.append(parameters)
        return self.runs[self.by_key[idempotency_key]]

    async def read(self, run_id: str) -> RunState:
        return self.runs[run_id]

    async def read_many(self, run_ids: Sequence[str]) -> dict[str, RunState]:
        return {run_id: self.runs[run_id] for run_id in run_ids if run_id in self.runs}

    async def cancel(self, run_id: str) -> RunState:
        self.runs[run_id] = RunState(run_id, RunPhase.CANCELLED, "Cancelled")
        return self.runs[run_id]

    async def resume(self, run_id: str, *, run_input: Mapping[str, object]) -> RunState:
        """As Prefect: only a suspended run resumes; one past its timeout fails instead."""
        state = self.runs[run_id]
        if state.phase is not RunPhase.PAUSED:
            raise OrchestratorRejected(f"run {run_id} is {state.phase}, not paused")
        if state.name == "Expired":  # a test's stand-in for a pause past its timeout
            self.runs[run_id] = RunState(run_id, RunPhase.FAILED, "Failed", "never resumed")
            raise OrchestratorRejected(f"run {run_id}: the pause timed out")
        self.resumed.append((run_id, dict(run_input)))
        self.runs[run_id] = RunState(run_id, RunPhase.QUEUED, "Resuming")
        return self.runs[run_id]

    async def question(self, run_id: str, question: str) -> dict[str, Any] | None:
        return self.questions.get((run_id, question))

    async def check(self) -> bool:
        return True

    async def worker_alive(self, run_id: str) -> bool | None:
        return True  # runs move only when a test says so: nothing is ever stuck here

    async def recover(self, observed: RunState) -> RunState:
        return self.runs[observed.run_id]
