"""A waiting job whose run was resumed without the edge (Prefect's UI form, its CLI or
`resume_flow_run`): the worker's `running` with `resumed_from` makes the job run again,
and if that report is lost the reconciler does, from the run's state. Through the edge
app, its SQLite ledger and the Prefect adapter, with respx standing in for Prefect's
REST API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import AUTH_A
from tests.doubles.queues import RecordingQueue
from tests.test_job_input import ResumablePrefect, reconciling, waiting_job
from tests.test_job_input import api as api
from tests.test_job_input import prefect as prefect
from tests.test_job_input import queue as queue
from tests.test_jobs_api import jobs_app as jobs_app
from tests.test_jobs_api import post_event

HOOK = {"webhook": {"url": "https://hooks.example.com/x", "events": ["job.running"]}}


async def view(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    return dict((await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json())


async def test_a_run_resumed_from_prefect_reports_running_and_the_job_runs_again(
    api: httpx.AsyncClient, prefect: ResumablePrefect, queue: RecordingQueue
) -> None:
    job_id = await waiting_job(api, prefect, **HOOK)
    prefect.runs["run-1"]["state"] = {"type": "RUNNING", "name": "Running"}  # resumed there
    # A plain `running` (the flow's start) still leaves a waiting job waiting.
    await post_event(api, job_id, {"type": "running"}, "e-run-2")
    assert (await view(api, job_id))["status"] == "waiting"
    # An answer to another question is not this wait's.
    other = {"type": "running", "resumed_from": "q2"}
    await post_event(api, job_id, other, "e-res-q2")
    assert (await view(api, job_id))["status"] == "waiting"
    resumed = {"type": "running", "resumed_from": "q1"}
    taken = await post_event(api, job_id, resumed, "e-res-q1")
    assert taken.status_code == 200 and taken.json()["status"] == "running", taken.text
    job = await view(api, job_id)
    assert job["status"] == "running" and job["input_request"] is None
    assert job["urls"]["input"] is None
    assert [m["event"] for m, _ in queue.sent if "event" in m][-1] == "job.running"
    # Answering it now is refused: it waits for nothing; Prefect was never asked.
    late = await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True}, headers=AUTH_A)
    assert late.status_code == 409 and prefect.resumed == []


async def test_resumed_from_comes_with_running_only(
    api: httpx.AsyncClient, prefect: ResumablePrefect
) -> None:
    job_id = await waiting_job(api, prefect)
    bad = await post_event(api, job_id, {"type": "progress", "resumed_from": "q1",
                                         "progress": {"completed_tasks": 2, "total_tasks": 2}},
                           "e-bad")  # fmt: skip
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    malformed = await post_event(api, job_id, {"type": "running", "resumed_from": "one"}, "e-x")
    assert malformed.status_code == 422
    assert (await view(api, job_id))["status"] == "waiting"


@pytest.mark.parametrize(
    "state",
    [{"type": "RUNNING", "name": "Running"}, {"type": "SCHEDULED", "name": "Resuming"},
     {"type": "PENDING", "name": "Pending"}],
    ids=["running", "resuming", "pending"],
)  # fmt: skip
async def test_the_reconciler_moves_on_a_waiting_job_whose_run_was_resumed_elsewhere(
    api: httpx.AsyncClient, prefect: ResumablePrefect, jobs_app: FastAPI, state: dict[str, Any]
) -> None:
    job_id = await waiting_job(api, prefect)
    prefect.runs["run-1"]["state"] = state  # resumed in Prefect; the worker's report lost
    jobs = reconciling(jobs_app)
    await jobs.reconcile()
    job = await view(api, job_id)
    assert job["status"] == "running" and job["input_request"] is None
    assert prefect.resumed == []  # nothing handed over: the run has its answer


async def test_the_reconciler_leaves_a_job_waiting_while_its_run_is_suspended(
    api: httpx.AsyncClient, prefect: ResumablePrefect, jobs_app: FastAPI
) -> None:
    job_id = await waiting_job(api, prefect)
    await reconciling(jobs_app).reconcile()
    assert (await view(api, job_id))["status"] == "waiting"
