"""The ports: the only ways the edge app reaches the platform.

Each port is a small async Protocol named by capability. Cloudflare adapters
(`edge.adapters.cloudflare`) implement them over Worker bindings; local adapters
(`edge.local`) over SQLite, numpy, sentence-transformers and an OpenAI-compatible server.
Adapters take and return plain Python values: nothing here ever sees a JsProxy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

#: Metadata values a vector or KV key may carry (what Vectorize can filter on).
MetadataValue = str | int | float | bool
Metadata = Mapping[str, MetadataValue]

#: Workers KV's smallest expirationTtl; the local store enforces the same floor.
KV_MIN_TTL_SECONDS = 60


class DependencyUnavailable(RuntimeError):
    """A platform dependency (model server, store) did not answer; the client may retry."""

    def __init__(self, dependency: str, reason: str, retry_after: int = 5) -> None:
        super().__init__(f"{dependency} unavailable: {reason}")
        self.dependency = dependency
        self.retry_after = retry_after


# --- key-value store ------------------------------------------------------------------------


class InvalidCursor(ValueError):
    """A list cursor that this store did not issue (a client sent it back mangled)."""


@dataclass(frozen=True, slots=True)
class KVKey:
    name: str
    expiration: int | None = None  # unix seconds, as Workers KV reports it
    metadata: dict[str, object] | None = None


@dataclass(frozen=True, slots=True)
class KVListPage:
    keys: list[KVKey]
    cursor: str | None  # None once the listing is complete


@dataclass(frozen=True, slots=True)
class KVEntry:
    value: str
    metadata: dict[str, object] | None = None


class KeyValueStore(Protocol):
    """Workers KV semantics: string values, optional TTL (>= 60 s) and metadata, prefix list."""

    async def get(self, key: str) -> str | None: ...

    async def get_with_metadata(self, key: str) -> KVEntry | None: ...

    async def put(
        self,
        key: str,
        value: str,
        *,
        ttl_seconds: int | None = None,
        metadata: dict[str, object] | None = None,
    ) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def list(
        self, *, prefix: str = "", limit: int = 1000, cursor: str | None = None
    ) -> KVListPage: ...


# --- vector index ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VectorRecord:
    id: str
    values: Sequence[float]
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VectorMatch:
    id: str
    score: float
    metadata: dict[str, MetadataValue]


class VectorIndex(Protocol):
    """Cosine-similarity index. Ids live inside a namespace: namespaces never see each other."""

    @property
    def dimensions(self) -> int: ...

    async def upsert(self, namespace: str, records: Sequence[VectorRecord]) -> None: ...

    async def delete(self, namespace: str, ids: Sequence[str]) -> None: ...

    async def query(
        self,
        namespace: str,
        vector: Sequence[float],
        *,
        top_k: int,
        filter: Metadata | None = None,
    ) -> list[VectorMatch]:
        """Best matches first; `filter` keeps records whose metadata equals every pair."""
        ...


# --- models ---------------------------------------------------------------------------------


class Embedder(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def check(self) -> bool:
        """Raise DependencyUnavailable unless the model answers; False when it cannot be
        asked for free (a billed platform model), True when it was."""
        ...


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


class TextGenerator(Protocol):
    @property
    def model(self) -> str: ...

    async def generate(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> str: ...

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> AsyncIterator[str]: ...

    async def check(self) -> bool:
        """Raise DependencyUnavailable unless the model server answers; cheap (no
        generation), so a readiness probe never waits behind a busy model. False when
        there is nothing free to ask, True when it was asked."""
        ...


@dataclass(frozen=True, slots=True)
class Ports:
    """The adapters one app instance is wired with."""

    kv: KeyValueStore
    vectors: VectorIndex
    embedder: Embedder
    generator: TextGenerator
    orchestrator: Orchestrator | None = None  # None: the jobs API answers 503
    scheduler: CrewScheduler | None = None  # None: the schedules API answers 503
    ledger: JobLedger | None = None  # None: the jobs API answers 503
    deliveries: DeliveryQueue | None = None
    rate_limiter: RateLimiter | None = None  # None: no per-tenant request limit
    #: How the edge's own HTTP calls go out (Prefect, webhooks): httpx's sockets when None,
    #: the runtime's fetch() in a Worker (edge.adapters.cloudflare.fetch_transport).
    http_transport: Any = None


# --- rate limits ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: int = 0  # seconds until the next request would be allowed (when refused)


class RateLimiter(Protocol):
    """Counts a tenant's requests; refuses those over its limit."""

    async def hit(self, key: str) -> RateDecision:
        """Count one request for `key`; whether it may go on."""
        ...


# --- orchestrator (Prefect) -------------------------------------------------------------------


class RunPhase(StrEnum):
    """Where a flow run is, in edgecrew's words: the orchestrator adapter maps its own
    state names to these, so the jobs core never learns an orchestrator's vocabulary."""

    QUEUED = "queued"  # waiting for a worker to take it (also: late, awaiting a retry)
    CLAIMED = "claimed"  # a worker took it and is starting it
    RUNNING = "running"
    PAUSED = "paused"  # paused or suspended by its flow
    STOPPING = "stopping"  # asked to cancel: ends once its worker confirms
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed, or crashed (its infrastructure died)
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # a state this adapter does not know

    @property
    def final(self) -> bool:
        return self in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED)


@dataclass(frozen=True, slots=True)
class RunState:
    """A flow run's state as the orchestrator reports it."""

    run_id: str
    phase: RunPhase
    name: str = ""  # the orchestrator's own name for it ("Crashed", "Late"): errors and logs
    message: str = ""
    since: float | None = None  # when the run entered this state (epoch seconds), if known
    state_id: str = ""  # the orchestrator's id of this very state (a later one differs)
    #: PAUSED for a person: the id of the question it waits on (`q3`), and when its wait
    #: expires (RFC 3339), as the run's pause says; None for any other pause or state.
    question: str | None = None
    question_expires_at: str | None = None


class OrchestratorRejected(RuntimeError):
    """The orchestrator refused for good (unknown deployment, deleted run): do not retry.

    `status_code` and `detail` (its answer's JSON, when it sent some) say how it refused.
    """

    def __init__(self, message: str, *, status_code: int | None = None, detail: Any = None):
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class Orchestrator(Protocol):
    """Where crews run. Submission is idempotent: the same key never makes a second run."""

    async def submit(
        self,
        deployment: str,
        *,
        parameters: Mapping[str, object],
        idempotency_key: str,
        tags: Sequence[str] = (),
    ) -> RunState: ...

    async def read(self, run_id: str) -> RunState: ...

    async def read_many(self, run_ids: Sequence[str]) -> dict[str, RunState]:
        """The states of many runs in one call; a run the orchestrator no longer has is
        absent from the result."""
        ...

    async def cancel(self, run_id: str) -> RunState: ...

    async def resume(self, run_id: str, *, run_input: Mapping[str, object]) -> RunState:
        """Resume a run suspended for input, with that input: it is scheduled to run
        again. OrchestratorRejected when the run cannot take it (it is not suspended,
        its wait timed out, the input does not fit what it asked for)."""
        ...

    async def question(self, run_id: str, question: str) -> dict[str, Any] | None:
        """The question a run paused for a person asks (`RunState.question`), as its
        worker stored it with the run; None if it stored none."""
        ...

    async def check(self) -> bool:
        """Raise DependencyUnavailable unless the orchestrator answers (one cheap read)."""
        ...

    async def worker_alive(self, run_id: str) -> bool | None:
        """Whether the worker holding this run still heartbeats; None when the
        orchestrator cannot tell which worker holds it."""
        ...

    async def recover(self, observed: RunState) -> RunState:
        """Unstick a run whose worker is gone: one claimed but never started goes back to
        its pool (or ends crashed if a process was started for it), one left cancelling
        ends cancelled. Nothing happens unless the run is still in the very state that
        was `observed`. Returns the state after."""
        ...


# --- crew schedules (Prefect deployments with schedules) ------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A crew run on a schedule, as the orchestrator is asked to make it."""

    schedule_id: str
    tenant: str
    crew: str
    deployment: str  # the crew's own deployment (`<flow>/<pool>`): the runs run as its do
    parameters: Mapping[str, object]  # every run's flow parameters
    cron: str | None
    interval_seconds: int | None
    timezone: str
    overlap: str  # "skip" | "queue" | "allow" a run due while the last one has not ended


@dataclass(frozen=True, slots=True)
class ScheduledRunInfo:
    """What the orchestrator says a flow run is: whose deployment, with what parameters."""

    deployment_ref: str | None
    parameters: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class StartedRun:
    """A run of some schedule's deployment, as the orchestrator lists runs by start."""

    info: ScheduledRunInfo
    state: RunState  # its state now (`state.run_id` is the run's id)
    started_at: str  # when it started (the orchestrator's own timestamp, RFC 3339)
    #: How many times it entered running: 0 for a run that never ran (skipped by its
    #: overlap limit, cancelled by a pause), which the orchestrator still gives a start.
    run_count: int


class ScheduleRefused(OrchestratorRejected):
    """The orchestrator refused the schedule itself; `field` is the request field it
    named (`cron`, `timezone`), if it named one."""

    def __init__(self, message: str, *, field: str | None) -> None:
        super().__init__(message, status_code=422)
        self.field = field


class CrewScheduler(Protocol):
    """Runs crews on a schedule: the orchestrator's own scheduler makes the runs."""

    async def create(self, spec: ScheduleSpec, *, paused: bool) -> str:
        """Make the schedule (making no runs while `paused`) and return the
        orchestrator's id for it. Asking again with the same `schedule_id` makes nothing
        new: it remakes that one (a retry after a lost answer is safe)."""
        ...

    async def set_paused(self, ref: str, paused: bool) -> None:
        """Stop making runs (the ones scheduled already are dropped), or start again."""
        ...

    async def delete(self, ref: str) -> None:
        """Remove the schedule and the runs it scheduled; one already gone is fine."""
        ...

    async def has_active_runs(self, ref: str) -> bool:
        """Whether a run of the schedule has started and not ended yet."""
        ...

    async def next_runs(self, ref: str, limit: int) -> list[float]:
        """When the schedule's next runs are due (epoch seconds), soonest first."""
        ...

    async def run_info(self, run_id: str) -> ScheduledRunInfo | None:
        """The flow run as the orchestrator has it; None when it has no such run."""
        ...

    async def started_runs(self, *, after: str, before: str, limit: int) -> list[StartedRun]:
        """Runs of every schedule's deployment (the deployments not deleted) that started
        between `after` and `before` (RFC 3339, both included), earliest first, at most
        `limit`: the reconciler looks among them for runs that never became a job."""
        ...


# --- delivery queue (client webhooks) ---------------------------------------------------------


class DeliveryQueue(Protocol):
    """Cloudflare Queues semantics: a JSON message, delivered later, at least once."""

    async def send(self, message: Mapping[str, object], *, delay_seconds: int = 0) -> None: ...


# --- job ledger (the one writer of job state) -----------------------------------------------


class JobLedger(Protocol):
    """The authoritative state of each job. Every change to a job goes through here and
    is applied atomically, one at a time per job (`shared.jobs.apply_change`): on
    Cloudflare a Durable Object per job, locally a SQLite transaction. Workers KV keeps
    the copy that reads and listings use. `now` (epoch seconds) is the caller's clock:
    a job whose `expires_at` has passed counts as absent.
    """

    async def create(self, record: Mapping[str, Any], *, now: float) -> tuple[dict[str, Any], bool]:
        """Store a new job under its tenant and id unless a live one is there already:
        (the job stored now, True) or (the one found, False)."""
        ...

    async def read(self, tenant: str, job_id: str, *, now: float) -> dict[str, Any] | None: ...

    async def change(
        self, tenant: str, job_id: str, change: Mapping[str, Any], *, now: float
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Apply one change: (the job before, the job after). `after` is None when the
        change changed nothing, both are None when there is no such job."""
        ...
