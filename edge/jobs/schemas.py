"""Bodies of the jobs API and of executor callbacks."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from edge.jobs.preferences import MAX_DEADLINE_SECONDS
from shared.crews import MAX_CREWS_PER_PUBLISH, NAME_PATTERN
from shared.jobs import WEBHOOK_EVENTS
from shared.limits import DEFAULT_LIMITS as LIMITS

WebhookEvent = Literal[
    "job.running", "job.progress", "job.waiting", "job.succeeded", "job.failed", "job.cancelled"
]
assert set(WebhookEvent.__args__) == set(WEBHOOK_EVENTS)  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WebhookSpec(_Strict):
    url: Annotated[str, Field(min_length=1, max_length=LIMITS.max_webhook_url_chars)]
    events: Annotated[list[WebhookEvent], Field(min_length=1, max_length=6)] | None = None


def _bounded(value: dict[str, Any], limit: int) -> dict[str, Any]:
    if len(json.dumps(value, ensure_ascii=False).encode()) > limit:
        raise ValueError(f"must be at most {limit} bytes as JSON")
    return value


#: A job's `inputs` and client `metadata`, bounded in size as JSON (a schedule's are
#: every run's job's, so `edge.schedules.schemas` takes the same types).
JobInputs = Annotated[
    dict[str, Any], AfterValidator(lambda value: _bounded(value, LIMITS.max_job_inputs_bytes))
]
JobMetadata = Annotated[
    dict[str, Any], AfterValidator(lambda value: _bounded(value, LIMITS.max_job_metadata_bytes))
]


class JobRequest(_Strict):
    # Which crews exist, and their inputs, is the catalog's to say (the route checks both);
    # the schema only bounds the name.
    crew: str = Field(
        pattern=NAME_PATTERN.pattern,
        description="A crew `GET /v1/crews` lists; `inputs` follow its schema",
    )
    inputs: JobInputs
    webhook: WebhookSpec | None = None
    metadata: JobMetadata = Field(default_factory=dict)
    deadline_seconds: Annotated[int, Field(ge=1, le=MAX_DEADLINE_SECONDS)] | None = Field(
        default=None,
        description="Cancel the job (error kind `DeadlineExceeded`) if it has not ended this "
        "many seconds after it was created; the `Cancel-After` header says the same",
    )


class JobUrls(BaseModel):
    self: str
    cancel: str
    input: str | None = Field(
        default=None, description="Where to answer the job's question, while it is `waiting`"
    )
    schedule: str | None = Field(default=None, description="The schedule that made this job")


class JobAccepted(BaseModel):
    id: str
    status: str
    crew: str
    created_at: str
    urls: JobUrls


class Progress(BaseModel):
    completed_tasks: int
    total_tasks: int
    current_task: str | None = None


class JobError(BaseModel):
    kind: str
    message: str


class InputRequest(BaseModel):
    """What a `waiting` job asks (`POST /v1/jobs/{id}/input` answers it)."""

    id: str = Field(description="The question's id (`q1`, `q2`, ...): name it in the answer")
    kind: str = Field(description="`review`: approve the output, or give feedback to redo it")
    task: str = Field(description="The task (or step) whose output is to be reviewed")
    prompt: str
    output: str = Field(description="The output under review")
    output_truncated: bool = Field(default=False, description="`output` was cut to a size")
    round: int = Field(default=1, description="1, then one more after each feedback")
    outcomes: list[str] | None = Field(
        default=None,
        description="A flow step's `emit` outcomes: approval takes its default, feedback "
        "is routed to the one it means; null for a crew's task and a step without them",
    )
    expires_at: str | None = Field(
        default=None, description="After this the job fails with error kind `InputTimeout`"
    )


DeliveryOutcome = Literal["delivered", "retrying", "gave_up"]
DeliveryError = Literal[
    "http_status", "timeout", "connection_refused", "dns_failure", "tls_error",
    "connection_failed", "network_error", "url_refused", "not_signed", "invalid_url",
]  # fmt: skip


class Delivery(BaseModel):
    """One delivery attempt of one webhook (attempts logged before these fields existed
    have the first four only)."""

    event: str
    attempt: int
    status_code: int | None = Field(description="The receiver's HTTP status; null for none")
    at: str = Field(description="When the attempt started")
    message_id: str | None = Field(
        default=None, description="The `webhook-id`: the same on every attempt of one webhook"
    )
    redelivery: bool = Field(default=False, description="Sent by `.../deliveries/redeliver`")
    outcome: DeliveryOutcome | None = Field(
        default=None,
        description="`delivered` (2xx), `retrying` (see `next_attempt_at`) or `gave_up`",
    )
    error: DeliveryError | None = Field(default=None, description="Why it failed; null if not")
    detail: str | None = Field(default=None, description="The failure, or answer, in words")
    duration_ms: int | None = None
    next_attempt_at: str | None = Field(
        default=None, description="When the next attempt is due; null when none is"
    )


class JobWebhook(BaseModel):
    url: str = Field(
        description="The URL without its query string or fragment (shown as `?…`): the "
        "webhooks go to the URL as given, tokens included"
    )
    events: list[str]
    default: bool = Field(
        default=False,
        description="Taken from the tenant's default webhook (`PUT /v1/webhooks`) at submit",
    )


class Job(BaseModel):
    id: str
    crew: str
    crew_version: str | None = Field(
        default=None,
        description="The crew's version: the catalog's when submitted, the worker's once it runs",
    )
    status: str
    inputs: dict[str, Any]
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    progress: Progress | None
    result: Any
    error: JobError | None
    deadline_at: str | None = Field(
        default=None, description="When the job is cancelled if it has not ended; null for none"
    )
    input_request: InputRequest | None = Field(
        default=None, description="While the job is `waiting`: what it asks; null otherwise"
    )
    schedule_id: str | None = Field(
        default=None, description="The schedule whose run this job is; null for a submitted job"
    )
    webhook: JobWebhook | None = Field(
        default=None,
        description="Where the job's webhooks go, as recorded at submit"
        " (not in a webhook's `data`)",
    )
    deliveries: list[Delivery]
    urls: JobUrls


class JobEventData(BaseModel):
    status: str
    progress: Progress | None
    result: Any = Field(default=None, description="On `job.succeeded` (and a snapshot of one)")
    error: JobError | None = Field(default=None, description="On `job.failed`")
    input_request: InputRequest | None = Field(
        default=None, description="On `job.waiting`: the question (its output cut to 2 KB)"
    )


class JobEvent(BaseModel):
    id: int = Field(description="Increases with every event of the job; resume after it")
    type: str = Field(
        description="`job.queued`, `job.running`, `job.progress`, `job.waiting`, a terminal "
        "`job.succeeded`, `job.failed` or `job.cancelled`; `job.snapshot` when events before "
        "it were dropped"
    )
    at: str
    data: JobEventData


class JobEventPage(BaseModel):
    events: list[JobEvent]
    next: int | None = Field(
        description="`after` for the next page; null once the job has ended and all is read"
    )


class JobSummary(BaseModel):
    id: str
    crew: str
    status: str
    created_at: str
    schedule_id: str | None = None


class JobList(BaseModel):
    jobs: list[JobSummary]
    cursor: str | None


class Crew(BaseModel):
    name: str
    description: str
    kind: str = Field(description="`crew` (its `tasks` are task names) or `flow` (step names)")
    inputs: dict[str, Any] = Field(description="A JSON Schema for the job's `inputs`")
    pool: str = Field(description="The Prefect work pool whose workers run it")
    tasks: list[str]
    version: str = Field(description="As the worker that published it describes it")
    published_at: str = Field(description="When a worker last published this crew")


class CrewList(BaseModel):
    crews: list[Crew]


class CrewPublish(BaseModel):
    """A worker's crews; `shared.crews.specs_from_publish` checks them in full."""

    worker: str = Field(description="The publishing worker's name, for logs")
    pool: str = Field(description="Its work pool; every crew must be in it")
    crews: list[dict[str, Any]] = Field(
        max_length=MAX_CREWS_PER_PUBLISH,
        description="Each crew as `GET /v1/crews` lists it, without `published_at`",
    )


class CrewsPublished(BaseModel):
    crews: list[str] = Field(description="The names now in the catalog from this publish")


class WebhookSecret(BaseModel):
    secret: str


#: One of a flow step's `emit` outcomes, as a question names it.
_Outcome = Annotated[str, Field(max_length=200)]


class ExecutorInputRequest(_Strict):
    id: Annotated[str, Field(pattern=r"^q[1-9][0-9]{0,8}$")]
    kind: Literal["review"]
    task: Annotated[str, Field(max_length=1000)]
    prompt: Annotated[str, Field(max_length=4000)]
    output: Annotated[str, Field(max_length=20000)]
    output_truncated: bool = False
    round: Annotated[int, Field(ge=1)] = 1
    outcomes: Annotated[list[_Outcome], Field(max_length=50)] | None = None
    expires_at: Annotated[str, Field(max_length=64)] | None = None


class JobAnswer(_Strict):
    """A person's answer to a `waiting` job's question: approve, or feedback to redo."""

    question: Annotated[str, Field(pattern=r"^q[1-9][0-9]{0,8}$")] | None = Field(
        default=None,
        description="The `input_request.id` answered; an answer to an earlier question is "
        "refused (409). Leave it out to answer whatever the job asks now",
    )
    approve: Literal[True] | None = Field(
        default=None, description="`true`: the output is accepted as it is"
    )
    feedback: Annotated[str, Field(min_length=1, max_length=LIMITS.max_question_chars)] | None = (
        Field(
            default=None, description="What to change: the task runs again with it, and asks again"
        )
    )

    @model_validator(mode="after")
    def _one_answer(self) -> JobAnswer:
        # Any `feedback` beside `approve` is refused, blank or not: which was meant?
        blank = self.feedback is not None and not self.feedback.strip()
        if (self.approve is None) == (self.feedback is None) or blank:
            raise ValueError("give either `approve: true` or a non-empty `feedback`, not both")
        return self


class ExecutorEvent(_Strict):
    type: Literal["running", "progress", "waiting", "succeeded", "failed", "cancelled"]
    tenant: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,48}$")]
    progress: Progress | None = None
    result: Any = None
    error: JobError | None = None
    crew_version: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="On `running`: the version of the crew the worker runs"
    )
    input_request: ExecutorInputRequest | None = Field(
        default=None, description="On `waiting`: the question the crew asks"
    )
    resumed_from: Annotated[str, Field(pattern=r"^q[1-9][0-9]{0,8}$")] | None = Field(
        default=None,
        description="On `running`: the question whose answer the run goes on from (an "
        "answer given in Prefect's UI or API reaches the job this way)",
    )

    @model_validator(mode="after")
    def _waiting_asks(self) -> ExecutorEvent:
        if (self.type == "waiting") != (self.input_request is not None):
            raise ValueError("`input_request` comes with `waiting`, and only with it")
        if self.resumed_from is not None and self.type != "running":
            raise ValueError("`resumed_from` comes with `running` only")
        return self


class EventAck(BaseModel):
    status: str = Field(description="The job's status now, or `duplicate` for a repeated event")


class ExecutorSearch(_Strict):
    tenant: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,48}$")]
    query: Annotated[str, Field(min_length=1, max_length=LIMITS.max_question_chars)]
    top_k: Annotated[int, Field(ge=1, le=LIMITS.max_top_k)] = 5
