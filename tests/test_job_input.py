"""A waiting job and its answer: `POST /v1/jobs/{id}/input`, through the edge app, its
SQLite ledger and the Prefect adapter, with respx standing in for Prefect's REST API
(resume with run input as Prefect answers it: ACCEPT, ABORT when not paused, REJECT
with a failed run past the pause timeout)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from tests.conftest import AUTH_A, AUTH_B
from tests.doubles.queues import RecordingQueue
from tests.test_jobs_api import JOB, PREFECT, FakePrefect, post_event
from tests.test_jobs_api import jobs_app as jobs_app  # the same app, with this Prefect

QUESTION = {
    "id": "q1", "kind": "review", "task": "reporting_task", "prompt": "Review it",
    "output": "FAKE ANSWER", "round": 1, "expires_at": "2030-01-01T00:00:00Z",
}  # fmt: skip


class ResumablePrefect(FakePrefect):
    """FakePrefect with `POST /flow_runs/{id}/resume`, as Prefect's server answers it."""

    def __init__(self, router: respx.MockRouter) -> None:
        super().__init__(router)
        self.resumed: list[tuple[str, Any]] = []
        self.expired: set[str] = set()
        self.down = False
        router.post(url__regex=rf"{PREFECT}/flow_runs/[^/]+/resume").mock(side_effect=self.resume)

    def suspend(self, run_id: str) -> None:
        self.runs[run_id]["state"] = {"type": "PAUSED", "name": "Suspended"}

    def resume(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            return httpx.Response(503)
        run_id = request.url.path.split("/")[-2]
        run = self.runs[run_id]
        if run["state"]["type"] != "PAUSED":
            reason = {"reason": "Cannot resume a flow run that is not paused."}
            return httpx.Response(200, json={"status": "ABORT", "state": None, "details": reason})
        if run_id in self.expired:
            run["state"] = {"type": "FAILED", "name": "Failed",
                            "message": "The flow was suspended and never resumed."}  # fmt: skip
            reason = {"reason": "The flow run suspend has timed out and can no longer resume."}
            return httpx.Response(
                200, json={"status": "REJECT", "state": run["state"], "details": reason}
            )
        self.resumed.append((run_id, json.loads(request.content)["run_input"]))
        run["state"] = {"type": "SCHEDULED", "name": "Resuming"}
        return httpx.Response(200, json={"status": "ACCEPT", "state": run["state"]})


@pytest.fixture
def prefect() -> Iterator[ResumablePrefect]:
    with respx.mock(assert_all_called=False) as router:
        yield ResumablePrefect(router)


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
async def api(
    jobs_app: FastAPI, make_client: Callable[[FastAPI], httpx.AsyncClient]
) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(jobs_app) as client:
        yield client


async def waiting_job(api: httpx.AsyncClient, prefect: ResumablePrefect, **webhook: Any) -> str:
    body = {**JOB, **webhook}
    job_id = str((await api.post("/v1/jobs", json=body, headers=AUTH_A)).json()["id"])
    await post_event(api, job_id, {"type": "running"}, "e-run")
    (run_id,) = [i for i, run in prefect.runs.items() if run["parameters"]["job_id"] == job_id]
    prefect.suspend(run_id)
    asked = await post_event(api, job_id, {"type": "waiting", "input_request": QUESTION}, "e-q1")
    assert asked.status_code == 200 and asked.json()["status"] == "waiting", asked.text
    return job_id


async def test_a_waiting_job_shows_its_question_and_an_answer_resumes_its_run(
    api: httpx.AsyncClient, prefect: ResumablePrefect, queue: RecordingQueue
) -> None:
    job_id = await waiting_job(api, prefect, webhook={"url": "https://hooks.example.com/x"})
    view = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert view["status"] == "waiting" and view["input_request"]["id"] == "q1"
    assert view["urls"]["input"] == f"/v1/jobs/{job_id}/input"
    # The default webhook events include job.waiting: nobody else will answer it.
    assert [m["event"] for m, _ in queue.sent if "event" in m] == ["job.waiting"]
    assert queue.sent[-1][0]["payload"]["data"]["input_request"]["output"] == "FAKE ANSWER"
    json_page = {**AUTH_A, "Accept": "application/json"}
    page = (await api.get(f"/v1/jobs/{job_id}/events", headers=json_page)).json()
    assert page["events"][-1]["type"] == "job.waiting"
    assert page["events"][-1]["data"]["input_request"]["task"] == "reporting_task"

    taken = await api.post(f"/v1/jobs/{job_id}/input", json={"feedback": "shorter"},
                           headers=AUTH_A)  # fmt: skip
    assert taken.status_code == 202, taken.text
    assert taken.json()["status"] == "running" and taken.json()["input_request"] is None
    assert "input" not in taken.json()["urls"] or taken.json()["urls"]["input"] is None
    assert prefect.resumed == [
        ("run-1", {"approve": False, "feedback": "shorter", "question": "q1"})
    ]
    # A second answer to the same question: the job waits for none.
    again = await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True}, headers=AUTH_A)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["job_status"] == "running"
    assert len(prefect.resumed) == 1

    # It asks again (the redone task), and the approval names the question.
    prefect.suspend("run-1")
    q2 = {**QUESTION, "id": "q2", "round": 2}
    await post_event(api, job_id, {"type": "waiting", "input_request": q2}, "e-q2")
    stale = await api.post(f"/v1/jobs/{job_id}/input", json={"question": "q1", "approve": True},
                           headers=AUTH_A)  # fmt: skip
    assert stale.status_code == 409 and "q2" in stale.json()["detail"]
    ok = await api.post(f"/v1/jobs/{job_id}/input", json={"question": "q2", "approve": True},
                        headers=AUTH_A)  # fmt: skip
    assert ok.status_code == 202
    assert prefect.resumed[-1] == ("run-1", {"approve": True, "feedback": "", "question": "q2"})
    events = [m["event"] for m, _ in queue.sent if "event" in m]
    assert events == ["job.waiting", "job.waiting"]  # job.running is not asked for


async def test_late_repeated_and_out_of_order_question_events_change_nothing(
    api: httpx.AsyncClient, prefect: ResumablePrefect
) -> None:
    job_id = await waiting_job(api, prefect)
    await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True}, headers=AUTH_A)
    # The executor's q1 again (a retry under a new id): the job does not wait again.
    await post_event(api, job_id, {"type": "waiting", "input_request": QUESTION}, "e-q1-again")
    # Prefect's RUNNING seen late, or a late progress, never ends a wait either.
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "running"
    prefect.suspend("run-1")
    q2 = {**QUESTION, "id": "q2"}
    await post_event(api, job_id, {"type": "waiting", "input_request": q2}, "e-q2")
    await post_event(api, job_id, {"type": "running"}, "e-run-late")
    progress = {"completed_tasks": 1, "total_tasks": 2, "current_task": "reporting_task"}
    await post_event(api, job_id, {"type": "progress", "progress": progress}, "e-prog")
    view = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert view["status"] == "waiting" and view["input_request"]["id"] == "q2"


@pytest.mark.parametrize(
    "body",
    [{}, {"approve": False}, {"approve": True, "feedback": "and this"}, {"feedback": ""},
     {"feedback": "   "}, {"question": "first", "approve": True}, {"approve": "yes"},
     {"approve": True, "extra": 1}],
    ids=["empty", "approve-false", "both", "empty-feedback", "blank-feedback", "bad-question",
         "not-a-bool", "unknown-field"],
)  # fmt: skip
async def test_a_bad_answer_is_422_problem_json_and_changes_nothing(
    api: httpx.AsyncClient, prefect: ResumablePrefect, body: dict[str, Any]
) -> None:
    job_id = await waiting_job(api, prefect)
    refused = await api.post(f"/v1/jobs/{job_id}/input", json=body, headers=AUTH_A)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "waiting"
    assert prefect.resumed == []


async def test_another_tenants_job_is_404_and_a_job_not_waiting_is_409(
    api: httpx.AsyncClient, prefect: ResumablePrefect
) -> None:
    job_id = await waiting_job(api, prefect)
    other = await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True}, headers=AUTH_B)
    assert other.status_code == 404
    unknown = await api.post("/v1/jobs/job_nope/input", json={"approve": True}, headers=AUTH_A)
    assert unknown.status_code in (404, 422)
    running = str((await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"])
    refused = await api.post(f"/v1/jobs/{running}/input", json={"approve": True}, headers=AUTH_A)
    assert refused.status_code == 409 and refused.json()["job_status"] == "queued"
    assert prefect.resumed == []


async def test_an_answer_after_the_timeout_fails_the_job_with_input_timeout(
    api: httpx.AsyncClient, prefect: ResumablePrefect
) -> None:
    job_id = await waiting_job(api, prefect)
    prefect.expired.add("run-1")
    late = await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True}, headers=AUTH_A)
    assert late.status_code == 409 and "expired" in late.json()["detail"]
    view = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert view["status"] == "failed" and view["error"]["kind"] == "InputTimeout"


async def test_an_answer_prefect_did_not_get_is_kept_and_handed_over_by_the_reconciler(
    api: httpx.AsyncClient, prefect: ResumablePrefect, jobs_app: FastAPI
) -> None:
    job_id = await waiting_job(api, prefect)
    prefect.down = True
    taken = await api.post(f"/v1/jobs/{job_id}/input", json={"feedback": "more"}, headers=AUTH_A)
    assert taken.status_code == 202 and taken.json()["status"] == "running"
    assert prefect.resumed == []
    prefect.down = False
    jobs = reconciling(jobs_app)
    await jobs.reconcile()
    assert prefect.resumed == [("run-1", {"approve": False, "feedback": "more", "question": "q1"})]
    record = await jobs.current("tenant_a", job_id)
    assert record["pending_answer"] is None and record["status"] == "running"
    await jobs.reconcile()  # handed over once: nothing more to do
    assert len(prefect.resumed) == 1


async def test_a_waiting_job_whose_run_prefect_failed_ends_with_input_timeout(
    api: httpx.AsyncClient, prefect: ResumablePrefect, jobs_app: FastAPI
) -> None:
    job_id = await waiting_job(api, prefect)
    never = "The flow was suspended and never resumed."
    prefect.runs["run-1"]["state"] = {"type": "FAILED", "name": "Failed", "message": never}
    jobs = reconciling(jobs_app)
    await jobs.reconcile()
    view = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert view["status"] == "failed"
    assert view["error"] == {"kind": "InputTimeout", "message": never}
    assert view["input_request"] is None


async def test_a_suspended_run_is_not_stuck_and_a_waiting_job_cancels(
    api: httpx.AsyncClient, prefect: ResumablePrefect, jobs_app: FastAPI
) -> None:
    job_id = await waiting_job(api, prefect)
    jobs = reconciling(jobs_app)
    await jobs.reconcile()
    assert prefect.state_changes == []  # nothing "recovered"
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "waiting"
    cancelled = await api.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A)
    assert cancelled.json()["status"] == "cancelled"
    assert prefect.runs["run-1"]["state"]["type"] == "CANCELLED"


async def test_prefer_wait_returns_once_the_job_waits(
    api: httpx.AsyncClient, prefect: ResumablePrefect
) -> None:
    job_id = await waiting_job(api, prefect)
    headers = {**AUTH_A, "Prefer": "wait=10"}
    waited = await api.get(f"/v1/jobs/{job_id}", headers=headers)
    assert waited.status_code == 202 and waited.json()["status"] == "waiting"


def reconciling(app: FastAPI) -> Any:
    """The app's job service, with every job stale: each pass looks at it."""
    jobs = app.state.jobs
    jobs._settings = dataclasses.replace(app.state.settings, stale_after_seconds=0)
    return jobs


async def test_approval_with_any_feedback_alongside_is_refused_and_urls_input_is_always_named(
    api: httpx.AsyncClient, prefect: ResumablePrefect
) -> None:
    job_id = await waiting_job(api, prefect)
    both = await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True, "feedback": "   "},
                          headers=AUTH_A)  # fmt: skip
    assert both.status_code == 422 and prefect.resumed == []
    taken = await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True}, headers=AUTH_A)
    read = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    # The same shape from the POST and from a GET: `input` is null when nothing is asked.
    assert taken.json()["urls"] == read["urls"] == {
        "self": f"/v1/jobs/{job_id}", "cancel": f"/v1/jobs/{job_id}/cancel", "input": None,
        "schedule": None,
    }  # fmt: skip


async def test_an_answer_to_a_job_the_edge_has_no_run_for_is_refused(
    api: httpx.AsyncClient, prefect: ResumablePrefect, jobs_app: FastAPI
) -> None:
    # A hand-over with no answer leaves the job `submitting` with no run id; a `waiting`
    # callback from the run Prefect did make can still move it on.
    prefect.fail_next = [httpx.Response(503)] * 3  # every try of the hand-over
    job_id = str((await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"])
    asked = await post_event(api, job_id, {"type": "waiting", "input_request": QUESTION}, "e-q1")
    assert asked.json()["status"] == "waiting"
    refused = await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True}, headers=AUTH_A)
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "waiting"
    assert prefect.resumed == []
    # The reconciler finds the run under the job's key and keeps its id: now it can.
    await reconciling(jobs_app).reconcile()
    (run_id,) = prefect.runs
    prefect.suspend(run_id)
    taken = await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True}, headers=AUTH_A)
    assert taken.status_code == 202, taken.text
    assert [run for run, _ in prefect.resumed] == [run_id]
