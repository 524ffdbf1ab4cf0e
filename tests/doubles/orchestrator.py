"""An in-memory Orchestrator: one run per idempotency key, states set by the test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edge.ports import RunPhase, RunState


class InMemoryOrchestrator:
    """Records submissions; every run stays SCHEDULED until `set_state` says otherwise."""

    def __init__(self) -> None:
        self.runs: dict[str, RunState] = {}
        self.by_key: dict[str, str] = {}
        self.submitted: list[Mapping[str, object]] = []

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

    async def check(self) -> bool:
        return True

    async def worker_alive(self, run_id: str) -> bool | None:
        return True  # runs move only when a test says so: nothing is ever stuck here

    async def recover(self, observed: RunState) -> RunState:
        return self.runs[observed.run_id]
