"""The Orchestrator port over Prefect's REST API (self-hosted server or Prefect Cloud).

Plain httpx, never the `prefect` package: the Worker cannot import it, and the edge needs
a few calls. Timeouts and 5xx are retried with backoff, always with the same idempotency
key, so a retry can never create a second flow run.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from edge.ports import DependencyUnavailable, OrchestratorRejected, RunPhase, RunState
from shared.claims import WORK_POOL_LABEL, holder
from shared.timestamps import rfc3339

#: Prefect's state types in edgecrew's words. SCHEDULED covers Prefect's Late and
#: AwaitingRetry (state names, not types); PAUSED its Suspended.
PHASES = {
    "SCHEDULED": RunPhase.QUEUED,
    "PENDING": RunPhase.CLAIMED,
    "RUNNING": RunPhase.RUNNING,
    "PAUSED": RunPhase.PAUSED,
    "CANCELLING": RunPhase.STOPPING,
    "COMPLETED": RunPhase.SUCCEEDED,
    "FAILED": RunPhase.FAILED,
    "CRASHED": RunPhase.FAILED,
    "CANCELLED": RunPhase.CANCELLED,
}
#: Phases from which a run has not started (or is not running) its flow: cancel outright.
_NOT_STARTED = {RunPhase.QUEUED, RunPhase.CLAIMED, RunPhase.PAUSED}
#: Flow runs read per `flow_runs/filter` request (Prefect's page size limit is 200).
READ_BATCH = 200
#: Pages of a pool's workers read when looking for the one holding a run.
WORKER_PAGES = 5
#: How edgecrew's executor names a pause for a person (`executor.run_input.PAUSE_KEY`)
#: and the question it stores with the run.
_PAUSE_PREFIX = "edgecrew-"
_QUESTION_ID = re.compile(r"^q[1-9][0-9]{0,8}$")
_QUESTION_KEY = "edgecrew-question-{question}"
_RELEASED = "Released by edgecrew: the worker that claimed it went offline before starting it."
_NEVER_STARTED = "The worker that claimed it went offline; its process never reached Running."
_CANCEL_UNCONFIRMED = "Cancelled by edgecrew: the worker holding it went offline."


class PrefectOrchestrator:
    """`api_url` is `http://host:4200/api`, or for Cloud
    `https://api.prefect.cloud/api/accounts/<account>/workspaces/<workspace>` with a key."""

    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 0.2,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(
            base_url=api_url.rstrip("/") + "/", timeout=timeout, headers=headers,
            transport=transport,
        )  # fmt: skip
        self._attempts = attempts
        self._backoff = backoff
        self._deployment_ids: dict[str, str] = {}

    async def submit(
        self,
        deployment: str,
        *,
        parameters: Mapping[str, object],
        idempotency_key: str,
        tags: Sequence[str] = (),
    ) -> RunState:
        deployment_id = await self._deployment_id(deployment)
        body = {
            "parameters": dict(parameters),
            "idempotency_key": idempotency_key,
            "tags": list(tags),
        }
        run = await self._request("POST", f"deployments/{deployment_id}/create_flow_run", body)
        return _state(run)

    async def read(self, run_id: str) -> RunState:
        return _state(await self._request("GET", f"flow_runs/{run_id}"))

    async def read_many(self, run_ids: Sequence[str]) -> dict[str, RunState]:
        states: dict[str, RunState] = {}
        for start in range(0, len(run_ids), READ_BATCH):
            batch = list(run_ids[start : start + READ_BATCH])
            body = {"flow_runs": {"id": {"any_": batch}}, "limit": len(batch)}
            for run in await self._request_list("POST", "flow_runs/filter", body):
                state = _state(run)
                states[state.run_id] = state
        return states

    async def cancel(self, run_id: str) -> RunState:
        current = await self.read(run_id)
        # A run being cancelled already is not asked again: that would restart the clock
        # the reconciler times an unconfirmed cancel by (`JobService._unstick`).
        if current.phase.final or current.phase is RunPhase.STOPPING:
            return current
        if current.phase in _NOT_STARTED:
            state = {"type": "CANCELLED", "name": "Cancelled", "message": "Cancelled by the API"}
        else:  # the worker stops the process and reports CANCELLED
            state = {"type": "CANCELLING", "name": "Cancelling", "message": "Cancelled by the API"}
        # Not forced: Prefect's own rules decide if the run moved on in the meantime.
        await self._request("POST", f"flow_runs/{run_id}/set_state", {"state": state})
        return await self.read(run_id)

    async def resume(self, run_id: str, *, run_input: Mapping[str, object]) -> RunState:
        # Prefect validates the input against the schema the run saved when it suspended
        # (`suspend_flow_run(wait_for_input=...)`), and refuses a run past its timeout.
        body = {"run_input": dict(run_input)}
        result = await self._request("POST", f"flow_runs/{run_id}/resume", body)
        if result.get("status") != "ACCEPT":
            details = result.get("details") or {}
            reason = details.get("reason") if isinstance(details, dict) else None
            raise OrchestratorRejected(
                f"resume of run {run_id}: {result.get('status')} {reason or ''}".rstrip()
            )
        # The run's new state comes with the answer: a second request that fails would
        # report a resume Prefect took as one it did not get.
        if isinstance(result.get("state"), dict):
            return _state({"id": run_id, "state": result["state"]})
        return await self.read(run_id)

    async def question(self, run_id: str, question: str) -> dict[str, Any] | None:
        # Stored by the executor next to its checkpoint (`executor.run_input.QUESTION_KEY`)
        # before it suspended the run; Prefect answers with the stored JSON as it is.
        try:
            found: Any = await self._request("GET", f"flow_runs/{run_id}/input/{_QUESTION_KEY}"
                                             .format(question=question))  # fmt: skip
        except OrchestratorRejected:  # 404: none stored
            return None
        return found if isinstance(found, dict) else None

    async def check(self) -> bool:
        await self._request_list("POST", "deployments/filter", {"limit": 1})
        return True

    async def worker_alive(self, run_id: str) -> bool | None:
        run = await self._request("GET", f"flow_runs/{run_id}")
        state = run.get("state") or {}
        name = holder(run.get("labels"), str(state.get("message") or ""))
        labels = run.get("labels") or {}
        pool = labels.get(WORK_POOL_LABEL) or run.get("work_pool_name")
        if name is None or not pool:
            return None
        # Prefect's own rule: a worker is ONLINE while its heartbeats are at most three
        # intervals old. Workers cannot be filtered by name, so page through the pool's.
        for offset in range(0, WORKER_PAGES * READ_BATCH, READ_BATCH):
            body = {"limit": READ_BATCH, "offset": offset}
            workers = await self._request_list("POST", f"work_pools/{pool}/workers/filter", body)
            for found in workers:
                if found.get("name") == name:
                    return bool(found.get("status") == "ONLINE")
            if len(workers) < READ_BATCH:
                break
        return False  # the pool no longer lists it

    async def recover(self, observed: RunState) -> RunState:
        run = await self._request("GET", f"flow_runs/{observed.run_id}")
        current = _state(run)
        # Prefect has no compare-and-set on states: re-reading narrows the window to the
        # two requests below, and the caller only gets here for a worker that is gone.
        if current.state_id != observed.state_id or current.phase is not observed.phase:
            return current
        if current.phase is RunPhase.CLAIMED and not run.get("infrastructure_pid"):
            # Claimed, never started: another worker may take it. Forced, as Prefect's
            # workers force a release, so that no policy can refuse it.
            state = {"type": "SCHEDULED", "name": "Scheduled", "message": _RELEASED}
            force = True
        elif current.phase is RunPhase.CLAIMED:  # a process was started and never reached Running
            state = {"type": "CRASHED", "name": "Crashed", "message": _NEVER_STARTED}
            force = False
        elif current.phase is RunPhase.STOPPING:  # nobody is left to stop it and confirm
            state = {"type": "CANCELLED", "name": "Cancelled", "message": _CANCEL_UNCONFIRMED}
            force = True
        else:
            return current
        body = {"state": state, "force": force}
        await self._request("POST", f"flow_runs/{observed.run_id}/set_state", body)
        return await self.read(observed.run_id)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One Prefect REST call with this client's retries (`edge.adapters.prefect_schedules`)."""
        return await self._request(method, path, body)

    async def _deployment_id(self, deployment: str) -> str:
        if deployment not in self._deployment_ids:
            found = await self._request("GET", f"deployments/name/{deployment}")
            self._deployment_ids[deployment] = str(found["id"])
        return self._deployment_ids[deployment]

    async def _request_list(self, method: str, path: str, body: Any) -> list[dict[str, Any]]:
        found: Any = await self._request(method, path, body)
        if not isinstance(found, list):
            raise DependencyUnavailable("Prefect", f"{method} {path}: expected a list", 5)
        return found

    async def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        reason = ""
        for attempt in range(self._attempts):
            if attempt:
                # Full jitter: many edges retrying at once should not retry in step.
                await asyncio.sleep(random.uniform(0, self._backoff * 2**attempt))  # noqa: S311
            try:
                response = await self._client.request(method, path, json=body)
            except httpx.TransportError as exc:  # timeouts, refused connections
                reason = type(exc).__name__
                continue
            if response.status_code >= 500 or response.status_code == 429:
                reason = f"HTTP {response.status_code}"
                continue
            if response.status_code in (401, 403):  # our key: fixable by an operator, so 503
                raise DependencyUnavailable(
                    "Prefect", f"{method} {path}: HTTP {response.status_code}"
                )
            if response.status_code >= 400:
                # Unknown deployment, deleted run, rejected body: retrying cannot help.
                raise OrchestratorRejected(
                    f"{method} {path}: HTTP {response.status_code} {response.text[:200]}",
                    status_code=response.status_code,
                    detail=_json_or_none(response),
                )
            if response.status_code == 204:  # DELETE and PATCH answer with no body
                return {}
            try:
                result: dict[str, Any] = response.json()
            except ValueError:  # seen from a loaded SQLite server: retry, same key
                reason = "a response that is not JSON"
                continue
            return result
        raise DependencyUnavailable("Prefect", f"{method} {path} failed: {reason}", 5)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _state(run: Mapping[str, Any]) -> RunState:
    state = run.get("state") or {}
    kind = str(state.get("type") or run.get("state_type") or "").upper()
    details = state.get("state_details") or {}
    return RunState(
        run_id=str(run["id"]),
        phase=PHASES.get(kind, RunPhase.UNKNOWN),
        name=str(state.get("name") or kind.title()),
        message=str(state.get("message") or ""),
        since=_epoch(state.get("timestamp")),
        state_id=str(state.get("id") or ""),
        question=_question(kind, details),
        question_expires_at=_question_expiry(kind, details),
    )


def _question(kind: str, details: Mapping[str, Any]) -> str | None:
    """The question a run Suspended by edgecrew's executor waits on (pause key `edgecrew-q3`)."""
    key = str(details.get("pause_key") or "")
    question = key.removeprefix(_PAUSE_PREFIX)
    if kind != "PAUSED" or not key.startswith(_PAUSE_PREFIX) or not _QUESTION_ID.match(question):
        return None
    return question


def _question_expiry(kind: str, details: Mapping[str, Any]) -> str | None:
    moment = _epoch(details.get("pause_timeout")) if _question(kind, details) else None
    return None if moment is None else rfc3339(moment)


def _epoch(stamp: object) -> float | None:
    """Prefect's state timestamp (ISO 8601, UTC) as epoch seconds; None if absent or odd."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
