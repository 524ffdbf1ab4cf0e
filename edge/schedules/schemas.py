"""Bodies of the schedules API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from edge.jobs.preferences import MAX_DEADLINE_SECONDS
from edge.jobs.schemas import JobInputs, JobMetadata, WebhookSpec, _Strict
from edge.schedules.cron import cron_error, timezone_error
from shared.crews import NAME_PATTERN

#: How a run due while the schedule's previous run has not ended is handled, as
#: Prefect's deployment concurrency does it (`edge.adapters.prefect_schedules`).
Overlap = Literal["skip", "queue", "allow"]
#: The longest interval: a year (Prefect schedules at most 100 days ahead, which is fine).
MAX_INTERVAL_SECONDS = 366 * 86400


class ScheduleRequest(_Strict):
    crew: str = Field(
        pattern=NAME_PATTERN.pattern,
        description="A crew `GET /v1/crews` lists; `inputs` follow its schema",
    )
    # The same bounds as a job's: each run becomes one.
    inputs: JobInputs = Field(description="Every run's inputs, as a job's")
    cron: Annotated[str, Field(min_length=1, max_length=120)] | None = Field(
        default=None,
        description="Five fields (minute hour day-of-month month day-of-week: numbers, `*`, "
        "ranges, steps, lists, names) or `@hourly`, `@daily`, `@weekly`, `@monthly`, "
        "`@yearly`; in `timezone`. Give this or `interval_seconds`",
    )
    interval_seconds: Annotated[int, Field(ge=1, le=MAX_INTERVAL_SECONDS)] | None = Field(
        default=None,
        description="A run every this many seconds (at least the edge's minimum, 60 by "
        "default), the first one interval after creation. Give this or `cron`",
    )
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        default="UTC",
        description="An IANA time zone name (`Europe/Oslo`) the cron is read in; "
        "daylight saving time is followed",
    )
    overlap: Overlap = Field(
        default="skip",
        description="A run due while the previous one has not ended: `skip` it (no job is "
        "made), `queue` it until that one ends, or `allow` both at once",
    )
    webhook: WebhookSpec | None = Field(default=None, description="Every run's job webhook")
    metadata: JobMetadata = Field(
        default_factory=dict, description="Client data, copied to every run's job"
    )
    deadline_seconds: Annotated[int, Field(ge=1, le=MAX_DEADLINE_SECONDS)] | None = Field(
        default=None,
        description="Every run's job deadline, as a job's `deadline_seconds`: the job is "
        "cancelled (error kind `DeadlineExceeded`) if it has not ended this many seconds "
        "after its run started",
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str | None) -> str | None:
        if cron is None:
            return None
        if problem := cron_error(cron):
            raise ValueError(problem)
        return cron.strip()  # what was checked is what Prefect gets, and the schedule shows

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, timezone: str) -> str:
        if problem := timezone_error(timezone):
            raise ValueError(problem)
        return timezone


class ScheduleUrls(BaseModel):
    self: str
    pause: str
    resume: str
    jobs: str = Field(description="The schedule's jobs (`GET /v1/jobs?schedule_id=`)")


class Schedule(BaseModel):
    id: str
    crew: str
    inputs: dict[str, Any]
    cron: str | None
    interval_seconds: int | None
    timezone: str
    overlap: Overlap
    webhook: WebhookSpec | None
    metadata: dict[str, Any]
    deadline_seconds: int | None = None
    paused: bool
    created_at: str
    updated_at: str
    next_runs: list[str] | None = Field(
        default=None,
        description="When the next runs are due (RFC 3339), as Prefect has them scheduled; "
        "on `GET /v1/schedules/{id}` only, null when Prefect did not answer",
    )
    urls: ScheduleUrls


class ScheduleSummary(BaseModel):
    id: str
    crew: str
    paused: bool
    created_at: str


class ScheduleList(BaseModel):
    schedules: list[ScheduleSummary]
    cursor: str | None


class ScheduledRun(_Strict):
    """The executor's call when a schedule's flow run starts (signed)."""

    tenant: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,48}$")]
    flow_run_id: Annotated[str, Field(pattern=r"^[0-9A-Za-z-]{1,64}$")] = Field(
        description="Prefect's id of the run (a UUID)"
    )


class ScheduledRunJob(BaseModel):
    job_id: str = Field(description="The job this run is: its events go to it")
    status: str
