"""A CrewScheduler fake that records what it was asked and keeps Prefect-like state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.ports import (
    DependencyUnavailable,
    OrchestratorRejected,
    RunPhase,
    RunState,
    ScheduledRunInfo,
    ScheduleSpec,
    StartedRun,
)
from shared.timestamps import parse_rfc3339, rfc3339


@dataclass
class FakeSchedule:
    spec: ScheduleSpec
    paused: bool
    due: list[float] = field(default_factory=list)
    active_runs: int = 0
    waiting_runs: int = 0  # due, not started (overlap `queue`): a pause cancels them


class RecordingScheduler:
    """One schedule per `schedule_id` (creating it again remakes it, as Prefect upserts)."""

    def __init__(self) -> None:
        self.schedules: dict[str, FakeSchedule] = {}  # ref -> schedule
        self.calls: list[tuple[str, Any]] = []
        #: Method names that raise DependencyUnavailable on their next call.
        self.down: set[str] = set()
        #: Flow runs Prefect has: run id -> what it says of them.
        self.runs: dict[str, ScheduledRunInfo] = {}

        #: When each run started, how often it ran, and its state now (`started_runs`).
        self.history: dict[str, tuple[float, int, RunState]] = {}
        #: The `limit` of every `started_runs` call.
        self.listed: list[int] = []

    def start_run(self, schedule_id: str, run_id: str) -> str:
        """A run of the schedule's deployment, as Prefect's scheduler would make it."""
        ref = f"dep-{schedule_id}"
        self.runs[run_id] = ScheduledRunInfo(ref, dict(self.schedules[ref].spec.parameters))
        return run_id

    def run_moved(
        self, run_id: str, *, started_at: float, phase: RunPhase = RunPhase.FAILED,
        run_count: int = 2, name: str = "", message: str = "",
    ) -> str:  # fmt: skip
        """A run of `start_run` (or a hand-made one in `runs`) started then and is now
        in `phase` (FAILED with two tries: the flow and its retry failed to register)."""
        state = RunState(run_id, phase, name=name or phase.value.title(), message=message)
        self.history[run_id] = (started_at, run_count, state)
        return run_id

    def _call(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if name in self.down:
            self.down.discard(name)
            raise DependencyUnavailable("Prefect", f"{name}: connection refused")

    async def create(self, spec: ScheduleSpec, *, paused: bool) -> str:
        self._call("create", spec)
        ref = f"dep-{spec.schedule_id}"
        self.schedules[ref] = FakeSchedule(spec, paused)
        return ref

    async def set_paused(self, ref: str, paused: bool) -> None:
        self._call("set_paused", (ref, paused))
        if ref not in self.schedules:  # removed in Prefect behind the edge's back
            raise OrchestratorRejected(f"PATCH deployments/{ref}: HTTP 404", status_code=404)
        self.schedules[ref].paused = paused
        if paused:
            self.schedules[ref].waiting_runs = 0

    async def delete(self, ref: str) -> None:
        self._call("delete", ref)
        self.schedules.pop(ref, None)

    async def has_active_runs(self, ref: str) -> bool:
        self._call("has_active_runs", ref)
        found = self.schedules.get(ref)
        return found is not None and found.active_runs + found.waiting_runs > 0

    async def next_runs(self, ref: str, limit: int) -> list[float]:
        self._call("next_runs", ref)
        found = self.schedules.get(ref)  # Prefect's filter finds nothing for a gone one
        return [] if found is None else found.due[:limit]

    async def run_info(self, run_id: str) -> ScheduledRunInfo | None:
        self._call("run_info", run_id)
        return self.runs.get(run_id)

    async def started_runs(self, *, after: str, before: str, limit: int) -> list[StartedRun]:
        self._call("started_runs", (after, before))
        self.listed.append(limit)
        low, high = parse_rfc3339(after), parse_rfc3339(before)
        found = sorted(
            (started, run_id)
            for run_id, (started, _, _) in self.history.items()
            # As Prefect's filter joins the deployments: a deleted one's runs are not listed.
            if low <= started <= high and self.runs[run_id].deployment_ref in self.schedules
        )
        return [
            StartedRun(self.runs[run_id], self.history[run_id][2],
                       rfc3339(started, timespec="microseconds"), self.history[run_id][1])
            for started, run_id in found[:limit]
        ]  # fmt: skip
