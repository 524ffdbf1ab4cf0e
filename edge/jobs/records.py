"""The shapes of what the jobs core stores and queues, built in one place.

A job's record lives in the ledger and in KV's copy as plain JSON, and queue messages
cross Cloudflare Queues as JSON, so these are `TypedDict`s: the stored form is the typed
form, nothing to convert. Everything that makes a record or a message calls the builders
here, so a field is added once and every writer has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict, TypeGuard

from shared.jobs import DEFAULT_WEBHOOK_EVENTS, JobStatus


class Webhook(TypedDict):
    url: str
    events: list[str]
    default: NotRequired[bool]  # the tenant's default webhook, as it was at submit


class JobRecord(TypedDict):
    """A job as the ledger keeps it (`public` in `edge.jobs.service` is what clients see)."""

    id: str
    tenant: str
    crew: str
    pool: str | None  # None only in records from before the catalog
    flow: str | None
    crew_version: str | None
    status: str  # a JobStatus value
    inputs: dict[str, Any]
    metadata: dict[str, Any]
    webhook: Webhook | None
    created_at: str
    updated_at: str
    progress: dict[str, Any] | None
    result: Any
    error: dict[str, Any] | None
    deadline_at: str | None
    fingerprint: str  # of the request, to tell a retry from a reuse of its key
    flow_run_id: str | None  # set once Prefect took the job
    run_key: str  # the idempotency key every hand-over to Prefect uses
    index_key: str  # its entry in the tenant's listing
    heard_at: float  # when the executor or Prefect last told us about it
    expires_at: float
    # Set by the ledger and by later changes:
    revision: NotRequired[int]
    events: NotRequired[list[dict[str, Any]]]
    events_trimmed: NotRequired[int]
    cancel_error: NotRequired[dict[str, Any]]  # why the edge asked to cancel (a deadline)
    cancel_requested: NotRequired[bool]  # the client asked to cancel
    handover_unsure: NotRequired[bool]  # a hand-over got no answer: a run may exist
    # A person's answers (edge.jobs.human_input):
    input_request: NotRequired[dict[str, Any] | None]  # what a `waiting` job asks
    questions_asked: NotRequired[int]  # the number of the last question (`q3` → 3)
    pending_answer: NotRequired[dict[str, Any] | None]  # taken, not yet handed to Prefect
    schedule_id: NotRequired[str]  # the schedule whose run this job is (edge.schedules)


def new_job_record(
    *,
    job_id: str,
    tenant: str,
    request: Mapping[str, Any],
    pool: str,
    flow: str | None,
    crew_version: str | None,
    fingerprint: str,
    run_key: str,
    index_key: str,
    created_at: str,
    deadline_at: str | None,
    now: float,
    ttl_seconds: int,
    default_webhook: Webhook | None = None,
) -> JobRecord:
    """The record of a job just accepted: `submitting`, not yet handed to Prefect.

    `default_webhook` (the tenant's, `edge.jobs.tenant_webhooks`) is kept when the
    request names no webhook of its own.
    """
    return {
        "id": job_id,
        "tenant": tenant,
        "crew": request["crew"],
        "pool": pool,
        "flow": flow,
        "crew_version": crew_version,
        "status": JobStatus.SUBMITTING.value,
        "inputs": request["inputs"],
        "metadata": request.get("metadata") or {},
        "webhook": webhook_of(request.get("webhook")) or default_webhook,
        "created_at": created_at,
        "updated_at": created_at,
        "progress": None,
        "result": None,
        "error": None,
        "deadline_at": deadline_at,
        "fingerprint": fingerprint,
        "flow_run_id": None,
        "run_key": run_key,
        "index_key": index_key,
        "heard_at": now,
        "expires_at": now + ttl_seconds,
    }


def webhook_of(raw: Mapping[str, Any] | None) -> Webhook | None:
    """A request's webhook as the job keeps it: a webhook naming no events gets the
    terminal ones."""
    if not raw:
        return None
    return {"url": raw["url"], "events": list(raw.get("events") or DEFAULT_WEBHOOK_EVENTS)}


# --- queue messages ---------------------------------------------------------------------------


class SubmitMessage(TypedDict):
    """Hand a job Prefect has not taken yet to Prefect (retried with a growing delay)."""

    kind: Literal["submit"]
    tenant: str
    job_id: str
    attempt: int


class DeliveryMessage(TypedDict):
    """Deliver one webhook event (retried with the same message id until it lands)."""

    tenant: str
    job_id: str
    event: str
    url: str
    message_id: str
    attempt: int
    first_attempt_at: float
    payload: dict[str, Any]
    redelivery: NotRequired[bool]  # asked for by a person: tried once


class SentWebhook(TypedDict):
    """A webhook as it was first sent, kept for redelivery (`JobStore.sent_webhooks`)."""

    message_id: str
    event: str
    sent_at: str
    at: NotRequired[float]  # sent_at as a unix time: the order they were sent in
    payload: dict[str, Any]


def submit_message(job: Mapping[str, Any]) -> SubmitMessage:
    return {"kind": "submit", "tenant": job["tenant"], "job_id": job["id"], "attempt": 1}


def delivery_message(
    job: Mapping[str, Any], event: str, url: str, *, data: dict[str, Any], now: float
) -> DeliveryMessage:
    """The first attempt at delivering `event` for `job` (as it is at `updated_at`).

    The message id names the job, the event and the change, so each retry and any
    re-send of the same change carries the same id and a receiver can drop repeats.
    """
    return {
        "tenant": job["tenant"],
        "job_id": job["id"],
        "event": event,
        "url": url,
        "message_id": f"msg_{job['id']}_{event}_{job['updated_at']}",
        "attempt": 1,
        "first_attempt_at": now,
        "payload": {"type": event, "timestamp": job["updated_at"], "data": data},
    }


def redelivery_message(
    job: Mapping[str, Any], sent: SentWebhook, url: str, *, now: float
) -> DeliveryMessage:
    """Deliver a webhook the job sent before once more: its id and body as they were."""
    return {
        "tenant": job["tenant"],
        "job_id": job["id"],
        "event": sent["event"],
        "url": url,
        "message_id": sent["message_id"],
        "attempt": 1,
        "first_attempt_at": now,
        "payload": sent["payload"],
        "redelivery": True,
    }


def is_submit(body: Mapping[str, Any]) -> TypeGuard[SubmitMessage]:
    """Whether a queue message is a hand-over (every other message is a delivery)."""
    return body.get("kind") == "submit"
