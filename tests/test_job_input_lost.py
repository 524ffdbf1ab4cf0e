"""A question whose `waiting` callback never reached the edge: the reconciler reads it
from the suspended run (its pause key and the question its worker stored with it), so
the job waits and can be answered. Through the edge app, its SQLite ledger and the
Prefect adapter, with respx standing in for Prefect's REST API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from tests.conftest import AUTH_A
from tests.test_job_input import QUESTION, ResumablePrefect, reconciling
from tests.test_job_input import api as api
from tests.test_job_input import queue as queue
from tests.test_jobs_api import JOB, PREFECT, post_event
from tests.test_jobs_api import jobs_app as jobs_app

STORED = {key: value for key, value in QUESTION.items() if key != "expires_at"}
EXPIRES = "2030-06-01T00:00:00Z"


class StoringPrefect(ResumablePrefect):
    """Prefect with the flow-run input store a suspended run's worker writes to."""

    def __init__(self, router: respx.MockRouter) -> None:
        super().__init__(router)
        self.inputs: dict[tuple[str, str], Any] = {}
        router.get(url__regex=rf"{PREFECT}/flow_runs/[^/]+/input/[^/]+$").mock(
            side_effect=self.read_input
        )

    def suspend_on(self, run_id: str, question: str, stored: Any = None) -> None:
        details = {"pause_key": f"edgecrew-{question}", "pause_timeout": EXPIRES}
        self.runs[run_id]["state"] = {"type": "PAUSED", "name": "Suspended",
                                      "state_details": details}  # fmt: skip
        if stored is not None:
            self.inputs[(run_id, f"edgecrew-question-{question}")] = stored

    def read_input(self, request: httpx.Request) -> httpx.Response:
        _, run_id, _, key = request.url.path.rsplit("/", 3)
        if (run_id, key) not in self.inputs:
            return httpx.Response(404, json={"detail": "Flow run input not found"})
        return httpx.Response(200, text=json.dumps(self.inputs[(run_id, key)]))


@pytest.fixture
def prefect() -> Iterator[StoringPrefect]:
    with respx.mock(assert_all_called=False) as router:
        yield StoringPrefect(router)


async def running_job(api: httpx.AsyncClient) -> str:
    job_id = str((await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"])
    await post_event(api, job_id, {"type": "running"}, "e-run")
    return job_id


async def test_a_lost_waiting_is_read_from_the_suspended_run_and_the_job_can_be_answered(
    api: httpx.AsyncClient, prefect: StoringPrefect, jobs_app: FastAPI
) -> None:
    job_id = await running_job(api)
    prefect.suspend_on("run-1", "q1", STORED)  # its `waiting` callback was lost
    await reconciling(jobs_app).reconcile()
    view = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert view["status"] == "waiting"
    expected = {**STORED, "expires_at": "2030-06-01T00:00:00.000Z", "output_truncated": False,
                "outcomes": None}  # fmt: skip
    assert view["input_request"] == expected
    taken = await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True}, headers=AUTH_A)
    assert taken.status_code == 202
    assert prefect.resumed == [("run-1", {"approve": True, "feedback": "", "question": "q1"})]


@pytest.mark.parametrize(
    "stored",
    [None, {**STORED, "id": "q2"}, {**STORED, "kind": "quiz"}, "not a question"],
    ids=["none-stored", "another-question", "not-valid", "not-an-object"],
)
async def test_a_run_paused_without_a_readable_question_leaves_the_job_running(
    api: httpx.AsyncClient, prefect: StoringPrefect, jobs_app: FastAPI, stored: Any
) -> None:
    job_id = await running_job(api)
    prefect.suspend_on("run-1", "q1", stored)
    await reconciling(jobs_app).reconcile()
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "running"


async def test_a_question_the_job_heard_already_is_not_asked_again(
    api: httpx.AsyncClient, prefect: StoringPrefect, jobs_app: FastAPI
) -> None:
    job_id = await running_job(api)
    prefect.suspend_on("run-1", "q1", STORED)
    await post_event(api, job_id, {"type": "waiting", "input_request": QUESTION}, "e-q1")
    prefect.down = True  # answered; Prefect did not get it, and the run is still paused
    await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True}, headers=AUTH_A)
    prefect.down = False
    await reconciling(jobs_app).reconcile()  # hands the answer over; q1 is not asked again
    record = await reconciling(jobs_app).current("tenant_a", job_id)
    assert record["status"] == "running" and record["pending_answer"] is None
    assert len(prefect.resumed) == 1


async def test_a_pause_that_is_not_edgecrews_question_is_nothing_new(
    api: httpx.AsyncClient, prefect: StoringPrefect, jobs_app: FastAPI
) -> None:
    job_id = await running_job(api)
    prefect.runs["run-1"]["state"] = {"type": "PAUSED", "name": "Paused",
                                      "state_details": {"pause_key": "1"}}  # fmt: skip
    await reconciling(jobs_app).reconcile()
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "running"
