"""Who holds a flow run: written by workers when they claim one, read by the edge's
reconciler to tell a run whose worker died from one whose worker is merely slow.

Prefect's own workers label each run they take (`prefect.worker.name`, …) right after
claiming it; edgecrew's worker also names itself in the claim (the `Pending` state's
message), so there is no moment at which a claimed run does not say who holds it.
"""

from __future__ import annotations

from collections.abc import Mapping

CLAIM_MESSAGE_PREFIX = "Claimed by worker "
WORKER_NAME_LABEL = "prefect.worker.name"
WORKER_TYPE_LABEL = "prefect.worker.type"
WORK_POOL_LABEL = "prefect.work-pool.name"


def claim_message(worker: str) -> str:
    """The message of the `Pending` state a worker proposes when it claims a run."""
    return f"{CLAIM_MESSAGE_PREFIX}{worker}"


def holder(labels: Mapping[str, object] | None, state_message: str) -> str | None:
    """The name of the worker holding a run, from its labels or its claim; None if unsaid."""
    named = (labels or {}).get(WORKER_NAME_LABEL)
    if isinstance(named, str) and named:
        return named
    if state_message.startswith(CLAIM_MESSAGE_PREFIX):
        return state_message.removeprefix(CLAIM_MESSAGE_PREFIX) or None
    return None
