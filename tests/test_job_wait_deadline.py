"""`Prefer: wait=N` on the jobs routes, and job deadlines (`Cancel-After`, `deadline_seconds`)."""

# The jobs API fixtures (FakePrefect behind respx, the app, its queue) come from
# tests/test_jobs_api.py; pytest finds them by name, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from edge.jobs.ids import fingerprint, job_id_for_key
from edge.jobs.preferences import MAX_DEADLINE_SECONDS, duration_seconds, preferred_wait
from edge.jobs.reconciler import COST_DEADLINE, COST_WORST_JOB
from edge.ports import DependencyUnavailable
from shared.timestamps import parse_rfc3339
from tests.conftest import AUTH_A
from tests.doubles.queues import RecordingQueue
from tests.test_jobs_api import (  # noqa: F401
    JOB,
    FakePrefect,
    api,
    held_by,
    jobs_app,
    post_event,
    prefect,
    queue,
    unsticking,
)

HOOKED = {**JOB, "webhook": {"url": "https://app.example.com/hooks"}}
SUCCEEDED = {"type": "succeeded", "result": {"report": "r"}}


# --- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "seconds"),
    [
        (["wait=5"], 5),
        (["respond-async, wait=10"], 10),
        (["handling=lenient", "WAIT=3"], 3),  # two fields are one list; names ignore case
        (['wait="7"'], 7),
        (["wait=5;foo=bar"], 5),
        (["wait=2, wait=9"], 2),  # only the first counts (RFC 7240 §2)
        (["wait=100"], 60),  # clamped
        (["wait=99999999999999999999999"], 60),
        (["wait"], 60),  # Replicate's bare `Prefer: wait`
        (["wait=0"], None),
        (["wait=soon"], None),
        (["wait=-1"], None),
        (["wait=1.5"], None),
        (["return=minimal"], None),
        ([], None),
    ],
)
def test_prefer_wait_is_read_as_rfc_7240_says(fields: list[str], seconds: int | None) -> None:
    assert preferred_wait(fields) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1h0m5s", 3605), ("90", 90),
     (" 2M ", 120), (str(MAX_DEADLINE_SECONDS), MAX_DEADLINE_SECONDS)],
)  # fmt: skip
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "0", "0s", "soon", "1.5s", "-5", "8d", "1s2h", "169h", "9" * 40, "9" * 40 + "h"]
)
def test_unusable_durations_say_why(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|between"):
        duration_seconds(text)


# --- Prefer: wait ------------------------------------------------------------------------


async def finish_after(api: httpx.AsyncClient, job_id: str, seconds: float) -> None:
    await asyncio.sleep(seconds)
    assert (await post_event(api, job_id, SUCCEEDED, "done")).status_code == 200


async def test_a_wait_on_submit_answers_200_once_the_job_ends(api: httpx.AsyncClient) -> None:
    headers = {**AUTH_A, "Idempotency-Key": "w1", "Prefer": "wait=10"}
    job_id = job_id_for_key("tenant_a", "w1")
    started = time.monotonic()
    response, _ = await asyncio.gather(
        api.post("/v1/jobs", json=JOB, headers=headers), finish_after(api, job_id, 0.4)
    )
    assert time.monotonic() - started < 3, "answered when the job ended, not after the wait"
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=10"
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    body = response.json()
    assert (body["id"], body["status"], body["result"]) == (job_id, "succeeded", {"report": "r"})
    assert body["inputs"] == JOB["inputs"] and body["deadline_at"] is None


async def test_a_wait_that_runs_out_answers_202_with_the_job_as_it_is(
    api: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    response = await api.post("/v1/jobs", json=JOB, headers={**AUTH_A, "Prefer": "wait=1"})
    assert time.monotonic() - started >= 1
    assert response.status_code == 202
    assert response.headers["preference-applied"] == "wait=1"
    body = response.json()
    assert body["status"] == "queued" and body["inputs"] == JOB["inputs"], "the full job view"
    assert response.headers["location"] == body["urls"]["self"]


async def test_a_wait_on_get_answers_when_the_job_ends_or_the_wait_runs_out(
    api: httpx.AsyncClient,
) -> None:
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    waited = await api.get(f"/v1/jobs/{job_id}", headers={**AUTH_A, "Prefer": "wait=1"})
    assert (waited.status_code, waited.json()["status"]) == (202, "queued")
    assert waited.headers["preference-applied"] == "wait=1"
    response, _ = await asyncio.gather(
        api.get(f"/v1/jobs/{job_id}", headers={**AUTH_A, "Prefer": "wait=10"}),
        finish_after(api, job_id, 0.4),
    )
    assert (response.status_code, response.json()["status"]) == (200, "succeeded")
    assert response.headers["vary"] == "Prefer"


async def test_a_wait_over_the_maximum_is_clamped(api: httpx.AsyncClient) -> None:
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    await post_event(api, job_id, SUCCEEDED)
    response = await api.get(f"/v1/jobs/{job_id}", headers={**AUTH_A, "Prefer": "wait=600"})
    assert response.status_code == 200 and response.headers["preference-applied"] == "wait=60"


@pytest.mark.parametrize("prefer", ["wait=soon", "wait=0", "respond-async"])
async def test_an_unusable_wait_is_ignored(api: httpx.AsyncClient, prefer: str) -> None:
    headers = {**AUTH_A, "Prefer": prefer}
    started = time.monotonic()
    submitted = await api.post("/v1/jobs", json=JOB, headers=headers)
    read = await api.get(submitted.json()["urls"]["self"], headers=headers)
    assert time.monotonic() - started < 1
    assert submitted.status_code == 202 and set(submitted.json()) == {
        "id", "status", "crew", "created_at", "urls"
    }, "the accepted body, as without Prefer"  # fmt: skip
    assert read.status_code == 200 and read.json()["status"] == "queued"
    assert "preference-applied" not in {**submitted.headers, **read.headers}


async def test_a_replay_under_its_key_waits_too(api: httpx.AsyncClient) -> None:
    headers = {**AUTH_A, "Idempotency-Key": "w2"}
    first = (await api.post("/v1/jobs", json=JOB, headers=headers)).json()
    await post_event(api, first["id"], SUCCEEDED)
    again = await api.post("/v1/jobs", json=JOB, headers={**headers, "Prefer": "wait=5"})
    assert again.status_code == 200 and again.json()["result"] == {"report": "r"}
    assert again.headers["preference-applied"] == "wait=5"


# --- deadlines ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "body", "seconds"),
    [("90s", None, 90), ("1h30m", None, 5400), (None, 300, 300), ("5m", 300, 300)],
)
async def test_a_deadline_comes_from_the_header_or_the_body(
    api: httpx.AsyncClient, header: str | None, body: int | None, seconds: int
) -> None:
    headers = {**AUTH_A, **({"Cancel-After": header} if header else {})}
    request = {**JOB, **({"deadline_seconds": body} if body else {})}
    job_id = (await api.post("/v1/jobs", json=request, headers=headers)).json()["id"]
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    created = parse_rfc3339(job["created_at"])
    assert parse_rfc3339(job["deadline_at"]) - created == pytest.approx(seconds, abs=0.002)


@pytest.mark.parametrize(
    ("header", "body", "loc"),
    [
        ("soon", None, ["header", "Cancel-After"]),
        ("0s", None, ["header", "Cancel-After"]),
        ("8d", None, ["header", "Cancel-After"]),
        ("x" * 65, None, ["header", "Cancel-After"]),
        ("90s", 60, ["header", "Cancel-After"]),  # two different deadlines
        (None, 0, ["body", "deadline_seconds"]),
        (None, MAX_DEADLINE_SECONDS + 1, ["body", "deadline_seconds"]),
        (None, "90", ["body", "deadline_seconds"]),
        (None, 1.5, ["body", "deadline_seconds"]),
    ],
)
async def test_an_unusable_deadline_is_422_naming_it_and_creates_nothing(
    api: httpx.AsyncClient, prefect: FakePrefect, header: str | None, body: Any, loc: list[str]
) -> None:
    headers = {**AUTH_A, **({"Cancel-After": header} if header else {})}
    request = {**JOB, **({"deadline_seconds": body} if body is not None else {})}
    response = await api.post("/v1/jobs", json=request, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["loc"][:2] for e in response.json()["errors"]] == [loc]
    assert prefect.runs == {}
    assert (await api.get("/v1/jobs", headers=AUTH_A)).json()["jobs"] == []


async def test_the_deadline_is_part_of_the_idempotent_request(api: httpx.AsyncClient) -> None:
    headers = {**AUTH_A, "Idempotency-Key": "d1"}
    first = await api.post("/v1/jobs", json=JOB, headers={**headers, "Cancel-After": "90s"})
    same = await api.post("/v1/jobs", json={**JOB, "deadline_seconds": 90}, headers=headers)
    assert same.status_code == 202 and same.json()["id"] == first.json()["id"]
    for other in ({"Cancel-After": "91s"}, {}):
        assert (
            await api.post("/v1/jobs", json=JOB, headers={**headers, **other})
        ).status_code == 422


async def test_a_request_without_a_deadline_keeps_the_fingerprint_it_had_before(
    api: httpx.AsyncClient, jobs_app: FastAPI
) -> None:
    """A retry that crosses the upgrade must still find the job it made."""
    submitted = await api.post("/v1/jobs", json=JOB, headers={**AUTH_A, "Idempotency-Key": "f"})
    job_id = submitted.json()["id"]
    record = await jobs_app.state.jobs.current("tenant_a", job_id)
    assert record["fingerprint"] == fingerprint({**JOB, "webhook": None, "metadata": {}})


def past_deadline(jobs_app: FastAPI, seconds: float) -> None:
    """The edge's clock, `seconds` from now."""
    jobs_app.state.jobs._clock = lambda: time.time() + seconds


async def test_a_job_past_its_deadline_is_cancelled_by_the_reconciler(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI, queue: RecordingQueue
) -> None:
    headers = {**AUTH_A, "Cancel-After": "60s"}
    job_id = (await api.post("/v1/jobs", json=HOOKED, headers=headers)).json()["id"]
    jobs = jobs_app.state.jobs
    assert await jobs.reconcile() == {"checked": 0, "changed": 0}, "not yet"
    past_deadline(jobs_app, 61)
    assert await jobs.reconcile() == {"checked": 1, "changed": 1}
    assert prefect.runs["run-1"]["state"]["type"] == "CANCELLED"
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["status"] == "cancelled" and job["error"]["kind"] == "DeadlineExceeded"
    (message, _), = queue.sent  # fmt: skip
    assert message["event"] == "job.cancelled"
    assert message["payload"]["data"]["error"]["kind"] == "DeadlineExceeded"
    assert message["payload"]["data"]["deadline_at"] == job["deadline_at"]
    as_json = {**AUTH_A, "Accept": "application/json"}
    log = (await api.get(f"/v1/jobs/{job_id}/events", headers=as_json)).json()
    assert log["events"][-1]["type"] == "job.cancelled"
    assert log["events"][-1]["data"]["error"]["kind"] == "DeadlineExceeded", "the stream says why"
    assert await jobs.reconcile() == {"checked": 0, "changed": 0}


async def running_with_a_deadline(api: httpx.AsyncClient, prefect: FakePrefect) -> str:
    """A job with a 60 s deadline (and a webhook), its run-1 running."""
    headers = {**AUTH_A, "Cancel-After": "60s"}
    job_id: str = (await api.post("/v1/jobs", json=HOOKED, headers=headers)).json()["id"]
    await post_event(api, job_id, {"type": "running"}, "e1")
    prefect.set("run-1", "RUNNING")
    return job_id


async def test_a_running_job_past_its_deadline_ends_when_its_worker_confirms(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI, queue: RecordingQueue
) -> None:
    job_id = await running_with_a_deadline(api, prefect)
    past_deadline(jobs_app, 61)
    await jobs_app.state.jobs.reconcile()
    assert prefect.runs["run-1"]["state"]["type"] == "CANCELLING"
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "running"
    await jobs_app.state.jobs.reconcile()
    assert len(prefect.state_changes) == 1, "a run being cancelled is not asked again"

    await post_event(api, job_id, {"type": "cancelled"}, "e2")  # the worker stopped it
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["status"] == "cancelled" and job["error"]["kind"] == "DeadlineExceeded"
    assert [m["event"] for m, _ in queue.sent] == ["job.cancelled"]
    assert queue.sent[0][0]["payload"]["data"]["error"]["kind"] == "DeadlineExceeded"


async def test_a_deadline_cancel_no_live_worker_confirms_is_recovered(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    unsticking(jobs_app, cancel_timeout_seconds=120)
    headers = {**AUTH_A, "Cancel-After": "60s"}
    job_id = (await api.post("/v1/jobs", json=JOB, headers=headers)).json()["id"]
    prefect.set("run-1", "RUNNING")
    past_deadline(jobs_app, 61)
    await jobs_app.state.jobs.reconcile()
    assert prefect.runs["run-1"]["state"]["type"] == "CANCELLING"
    held_by(prefect, "run-1", "w1", online=False)  # its worker died before it could stop
    prefect.set("run-1", "CANCELLING", at=time.time() - 121)
    await jobs_app.state.jobs.reconcile()
    assert prefect.runs["run-1"]["state"]["type"] == "CANCELLED"
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["status"] == "cancelled" and job["error"]["kind"] == "DeadlineExceeded"


async def test_a_job_not_handed_over_by_its_deadline_is_just_cancelled(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    prefect.fail_next = [httpx.ConnectError("down")] * 3
    headers = {**AUTH_A, "Cancel-After": "60s"}
    accepted = (await api.post("/v1/jobs", json=JOB, headers=headers)).json()
    assert accepted["status"] == "submitting"
    past_deadline(jobs_app, 61)
    await jobs_app.state.jobs.reconcile()
    job = (await api.get(accepted["urls"]["self"], headers=AUTH_A)).json()
    assert job["status"] == "cancelled" and job["error"]["kind"] == "DeadlineExceeded"
    # Its hand-over got no answer, so Prefect may have made the run: found and stopped.
    assert all(run["state"]["type"] == "CANCELLED" for run in prefect.runs.values())


async def test_a_job_that_ends_before_its_deadline_is_left_alone(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI, queue: RecordingQueue
) -> None:
    headers = {**AUTH_A, "Cancel-After": "60s"}
    job_id = (await api.post("/v1/jobs", json=HOOKED, headers=headers)).json()["id"]
    await post_event(api, job_id, SUCCEEDED)
    past_deadline(jobs_app, 61)
    await jobs_app.state.jobs.reconcile()
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert (job["status"], job["error"]) == ("succeeded", None)
    assert prefect.state_changes == []
    assert [m["event"] for m, _ in queue.sent] == ["job.succeeded"]


async def test_reading_a_job_past_its_deadline_leaves_the_cancel_to_the_reconciler(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    submitted = await api.post("/v1/jobs", json=JOB, headers={**AUTH_A, "Cancel-After": "60"})
    job_id = submitted.json()["id"]
    past_deadline(jobs_app, 61)
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["status"] == "queued" and prefect.state_changes == []


def test_a_pass_keeps_room_for_a_deadline_cancel() -> None:
    assert COST_WORST_JOB >= COST_DEADLINE


async def test_a_wait_the_ledger_stops_answering_still_answers_202_with_the_job(
    api: httpx.AsyncClient, jobs_app: FastAPI
) -> None:
    """The job exists once the POST made it: a ledger hiccup during the wait must not
    turn into a 503 that a client without a key would answer by submitting again."""
    ledger = jobs_app.state.ports.ledger
    read = ledger.read

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise DependencyUnavailable("job ledger", "reset", 1)

    headers = {**AUTH_A, "Prefer": "wait=5"}
    waiting = asyncio.create_task(api.post("/v1/jobs", json=JOB, headers=headers))
    await asyncio.sleep(0.1)  # created and handed over; now waiting
    ledger.read = down
    response = await waiting
    ledger.read = read
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"


async def test_a_clients_cancel_is_not_told_as_a_deadline_that_passed_meanwhile(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI, queue: RecordingQueue
) -> None:
    job_id = await running_with_a_deadline(api, prefect)
    assert (await api.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A)).status_code == 202
    past_deadline(jobs_app, 61)  # the worker is still stopping the run
    await jobs_app.state.jobs.reconcile()
    await post_event(api, job_id, {"type": "cancelled"}, "e2")
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert (job["status"], job["error"]) == ("cancelled", None)
    assert [m["event"] for m, _ in queue.sent] == ["job.cancelled"]
    assert queue.sent[0][0]["payload"]["data"]["error"] is None
