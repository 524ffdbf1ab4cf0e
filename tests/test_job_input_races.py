"""An answer goes to the question it answers, and to no other: through the edge app, its
SQLite ledger and the Prefect adapter, with respx standing in for Prefect's REST API
(`tests.test_job_input.ResumablePrefect`) made to lose replies the way a network does."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx
from fastapi import FastAPI

from edge.jobs.human_input import answer_to_hand_over
from tests.conftest import AUTH_A
from tests.test_job_input import QUESTION, ResumablePrefect, reconciling, waiting_job
from tests.test_job_input import api as api
from tests.test_job_input import queue as queue
from tests.test_jobs_api import jobs_app as jobs_app
from tests.test_jobs_api import post_event

Q2 = {**QUESTION, "id": "q2", "round": 2}


class LossyPrefect(ResumablePrefect):
    """Takes a resume, then loses its reply (`lose_resume_reply`), or fails the reads
    that come after it (`reads_down`)."""

    lose_resume_reply = False
    reads_down = False

    def resume(self, request: httpx.Request) -> httpx.Response:
        taken = super().resume(request)
        return httpx.Response(503) if self.lose_resume_reply else taken

    def read(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(503) if self.reads_down else super().read(request)


@pytest.fixture
def prefect() -> Iterator[LossyPrefect]:
    with respx.mock(assert_all_called=False) as router:
        yield LossyPrefect(router)


async def test_a_resume_prefect_took_is_handed_over_even_if_the_read_after_it_fails(
    api: httpx.AsyncClient, prefect: LossyPrefect, jobs_app: FastAPI
) -> None:
    job_id = await waiting_job(api, prefect)
    prefect.reads_down = True
    taken = await api.post(f"/v1/jobs/{job_id}/input", json={"feedback": "shorter"}, headers=AUTH_A)
    prefect.reads_down = False
    assert taken.status_code == 202
    record = await reconciling(jobs_app).current("tenant_a", job_id)
    assert record["pending_answer"] is None  # Prefect said it took it: nothing is left over
    # The answer names its question, so the run can tell it is for the pause it is in.
    assert prefect.resumed == [("run-1", {"approve": False, "feedback": "shorter",
                                          "question": "q1"})]  # fmt: skip


async def test_an_answer_whose_reply_was_lost_is_never_handed_to_the_next_question(
    api: httpx.AsyncClient, prefect: LossyPrefect, jobs_app: FastAPI
) -> None:
    job_id = await waiting_job(api, prefect)
    prefect.lose_resume_reply = True  # Prefect resumes the run; its reply never comes
    taken = await api.post(f"/v1/jobs/{job_id}/input", json={"feedback": "shorter"}, headers=AUTH_A)
    prefect.lose_resume_reply = False
    assert taken.status_code == 202
    jobs = reconciling(jobs_app)
    assert (await jobs.current("tenant_a", job_id))["pending_answer"]["question"] == "q1"
    # The resumed run redoes the task with the feedback and asks again.
    prefect.suspend("run-1")
    await post_event(api, job_id, {"type": "waiting", "input_request": Q2}, "e-q2")
    record = await jobs.current("tenant_a", job_id)
    assert record["status"] == "waiting" and record["pending_answer"] is None
    await jobs.reconcile()
    assert len(prefect.resumed) == 1, "q1's feedback was handed to q2's pause"
    view = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert view["status"] == "waiting" and view["input_request"]["id"] == "q2"


async def test_the_reconciler_hands_an_answer_over_only_as_the_ledger_has_it(
    api: httpx.AsyncClient, prefect: LossyPrefect, jobs_app: FastAPI
) -> None:
    job_id = await waiting_job(api, prefect)
    prefect.down = True
    await api.post(f"/v1/jobs/{job_id}/input", json={"feedback": "shorter"}, headers=AUTH_A)
    prefect.down = False
    jobs = reconciling(jobs_app)
    lagging = await jobs.store.get("tenant_a", job_id)  # KV's copy: q1's answer pending
    assert lagging["pending_answer"]["question"] == "q1"
    # Meanwhile (elsewhere) the run got q1's answer and asked q2: the ledger knows, and
    # KV's copy here still shows the old answer pending.
    prefect.suspend("run-1")
    await post_event(api, job_id, {"type": "waiting", "input_request": Q2}, "e-q2")
    await jobs.store.save(lagging, previous=None)
    await jobs.reconcile()
    assert prefect.resumed == []
    assert (await jobs.current("tenant_a", job_id))["input_request"]["id"] == "q2"


async def test_clearing_an_old_answer_leaves_a_newer_one_alone(
    api: httpx.AsyncClient, prefect: LossyPrefect, jobs_app: FastAPI
) -> None:
    job_id = await waiting_job(api, prefect)
    jobs = reconciling(jobs_app)
    await api.post(f"/v1/jobs/{job_id}/input", json={"feedback": "shorter"}, headers=AUTH_A)
    old = {**await jobs.current("tenant_a", job_id),
           "pending_answer": {"question": "q1", "run_input": {"approve": True}}}  # fmt: skip
    prefect.suspend("run-1")
    await post_event(api, job_id, {"type": "waiting", "input_request": Q2}, "e-q2")
    prefect.down = True  # q2's answer is recorded, not handed over yet
    await api.post(f"/v1/jobs/{job_id}/input", json={"approve": True}, headers=AUTH_A)
    prefect.down = False
    prefect.runs["run-1"]["state"] = {"type": "RUNNING", "name": "Running"}
    # A late hand-over of q1's answer, refused (the run is not paused), clears only q1's.
    await jobs._hand_answer_over(old)
    assert (await jobs.current("tenant_a", job_id))["pending_answer"]["question"] == "q2"


def test_only_an_answer_to_the_last_question_of_a_running_job_is_handed_over() -> None:
    pending = {"question": "q1", "run_input": {}}
    job = {"status": "running", "questions_asked": 1, "pending_answer": pending}
    assert answer_to_hand_over(job) == pending
    assert answer_to_hand_over({**job, "questions_asked": 2}) is None
    assert answer_to_hand_over({**job, "status": "waiting"}) is None
    assert answer_to_hand_over({**job, "pending_answer": None}) is None
