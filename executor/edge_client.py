"""The executor's calls to the edge: signed job events, searches and the crew catalog.

Each event has a stable `webhook-id`; a retry sends the same id, so the edge applies it at
most once. Retries back off exponentially until the edge acknowledges (2xx) or answers
with a client error that retrying cannot fix.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from executor.settings import ExecutorSettings
from shared.signing import signed_headers

log = logging.getLogger("edgecrew.executor")
#: How long a schedule's run waits for the edge to know its schedule (KV shows a new key
#: everywhere within about a minute).
SCHEDULE_VISIBLE_SECONDS = 90.0


class EdgeUnreachable(RuntimeError):
    """The edge did not acknowledge a callback after every retry (or refused it: then
    `status_code` is its 4xx and `detail` what its problem document says)."""

    def __init__(self, message: str, status_code: int | None = None, detail: str = "") -> None:
        super().__init__(message + (f": {detail}" if detail else ""))
        self.status_code = status_code
        self.detail = detail

    @property
    def refused(self) -> bool:
        """A client error: sending the same again cannot succeed."""
        return self.status_code is not None and self.status_code < 500 and self.status_code != 429


class EdgeClient:
    def __init__(
        self,
        settings: ExecutorSettings,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._client = client or httpx.Client(timeout=15.0)
        self._sleep = sleep

    def event(
        self,
        job_id: str,
        tenant: str,
        event_id: str,
        body: Mapping[str, Any],
        *,
        attempts: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Post one job event; returns the edge's answer once it acknowledged it. With
        `attempts` and `timeout`: at most that many tries, each of at most that long."""
        payload = {"tenant": tenant, **body}
        return self._signed_post(
            f"/v1/internal/jobs/{job_id}/events", f"{job_id}:{event_id}", payload,
            attempts=attempts, timeout=timeout,
        )  # fmt: skip

    def notify(self, job_id: str, tenant: str, event_id: str, body: Mapping[str, Any]) -> None:
        """Best effort, for `running` and `progress`: the crew goes on if the edge is away.

        Only the final event must be acknowledged; the reconciler catches the edge up on
        the rest from Prefect.
        """
        try:
            self.event(job_id, tenant, event_id, body)
        except EdgeUnreachable as exc:
            log.warning("edge did not take %s for %s: %s", body.get("type"), job_id, exc)

    def register_scheduled_run(self, schedule_id: str, tenant: str, flow_run_id: str) -> str | None:
        """The job id of a starting run of a schedule (made once per run); None when the
        schedule was deleted, or is still unknown after `SCHEDULE_VISIBLE_SECONDS`.

        A 404 is waited out: Workers KV may take a minute to show a schedule made at
        another location; a deleted one answers 410 at once, and a run Prefect does not
        show as the schedule's 409 (retrying cannot change either).
        """
        path = f"/v1/internal/schedules/{schedule_id}/runs"
        payload = {"tenant": tenant, "flow_run_id": flow_run_id}
        waited, pause = 0.0, 2.0
        while True:
            try:
                message_id = f"schedule-run:{schedule_id}:{flow_run_id}"  # the edge checks it
                answer = self._signed_post(path, message_id, payload)
            except EdgeUnreachable as exc:
                if exc.status_code in (409, 410):
                    log.warning("schedule %s takes no run %s: %s", schedule_id, flow_run_id, exc)
                    return None
                if exc.status_code != 404:
                    raise
                if waited >= SCHEDULE_VISIBLE_SECONDS:
                    log.warning("schedule %s unknown to the edge: %s", schedule_id, exc)
                    return None
                self._sleep(pause)
                waited += pause
                pause = min(2 * pause, 30.0)
                continue
            return str(answer["job_id"])

    def search(self, tenant: str, query: str, top_k: int = 5) -> list[dict[str, Any]]:
        """The tenant's knowledge-base matches for a query (the crews' knowledge tool)."""
        payload = {"tenant": tenant, "query": query, "top_k": top_k}
        message_id = f"search:{tenant}:{time.time_ns()}"
        answer = self._signed_post("/v1/internal/search", message_id, payload)
        return list(answer["matches"])

    def publish_crews(self, worker: str, pool: str, crews: list[dict[str, Any]]) -> list[str]:
        """Publish this worker's crews to the edge's catalog; the names it took."""
        payload = {"worker": worker, "pool": pool, "crews": crews}
        message_id = f"crews:{worker}:{time.time_ns()}"
        answer = self._signed_post("/v1/internal/crews", message_id, payload)
        return list(answer["crews"])

    # -- bulk ingestions (`executor.ingest`) ----------------------------------------------

    def ingestion_source(self, job_id: str, tenant: str) -> dict[str, Any]:
        """The ingestion's documents, and how the edge chunks and embeds them."""
        return self._ingestion_call(job_id, tenant, "source", {})

    def write_vectors(self, job_id: str, tenant: str, vectors: list[dict[str, Any]]) -> int:
        """Upsert embedded chunks into the edge's own index; how many it took."""
        return int(self._ingestion_call(job_id, tenant, "vectors", {"vectors": vectors})["written"])

    def prepare_documents(
        self, job_id: str, tenant: str, documents: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Before writing documents' chunks: the edge's records make room for them."""
        answer = self._ingestion_call(job_id, tenant, "prepare", {"documents": documents})
        return list(answer["documents"])

    def register_documents(
        self, job_id: str, tenant: str, documents: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Record documents whose chunks are written (the edge drops stale chunks)."""
        answer = self._ingestion_call(job_id, tenant, "documents", {"documents": documents})
        return list(answer["documents"])

    def _ingestion_call(
        self, job_id: str, tenant: str, kind: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        # Each of these calls is idempotent on the edge (reads, upserts, records), so any
        # id will do; a fresh one per call keeps retries of one call under one id.
        message_id = f"ingest:{job_id}:{kind}:{time.time_ns()}"
        path = f"/v1/internal/ingestions/{job_id}/{kind}"
        return self._signed_post(path, message_id, {"tenant": tenant, **body})

    def _signed_post(
        self,
        path: str,
        message_id: str,
        payload: Mapping[str, Any],
        *,
        attempts: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        # UTF-8 as it is: escaped, text in Chinese or emoji takes 6-12 bytes a character,
        # and a body the edge would take comes back 413.
        body = json.dumps(payload, ensure_ascii=False).encode()
        reason, status, detail = "", None, ""
        for attempt in range(attempts or self._settings.callback_attempts):
            if attempt:
                self._sleep(min(0.5 * 2**attempt, 30.0))
            headers = signed_headers(
                self._settings.executor_secret, message_id, int(time.time()), body
            )
            headers["Content-Type"] = "application/json"
            # No `timeout` argument unless one is asked for: the client's default stands,
            # and a test client (Starlette's) refuses the argument.
            per_call: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
            try:
                response = self._client.post(
                    self._settings.edge_url + path, content=body, headers=headers, **per_call
                )
            except httpx.TransportError as exc:
                reason = type(exc).__name__
                continue
            if response.status_code < 300:
                answer: dict[str, Any] = response.json()
                return answer
            reason, status = f"HTTP {response.status_code}", response.status_code
            if response.status_code < 500 and response.status_code != 429:
                detail = _problem_detail(response)
                break  # a 4xx will not get better by retrying
        raise EdgeUnreachable(
            f"POST {path} ({message_id}) was not acknowledged: {reason}", status, detail
        )


def _problem_detail(response: httpx.Response) -> str:
    """What a problem+json answer says was wrong (its title and errors), briefly."""
    try:
        problem = response.json()
    except ValueError:
        return response.text[:300]
    if not isinstance(problem, dict):
        return ""
    parts = [str(problem.get("detail") or problem.get("title") or "")]
    parts += [str(e.get("msg", e)) for e in problem.get("errors", [])[:5] if isinstance(e, dict)]
    return "; ".join(p for p in parts if p)[:500]
