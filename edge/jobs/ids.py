"""Job and schedule ids, and request fingerprints."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def job_id_for_key(tenant: str, idempotency_key: str) -> str:
    """The same tenant and Idempotency-Key always name the same job (and Prefect run)."""
    digest = hashlib.sha256(f"{tenant}\x00{idempotency_key}".encode()).digest()
    return "job_" + _base32(int.from_bytes(digest[:16], "big"), 26)


def new_job_id(now_ms: int | None = None) -> str:
    """A fresh id, time-ordered like a ULID: 48 bits of milliseconds, 80 random bits."""
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    return "job_" + _base32((millis << 80) | secrets.randbits(80), 26)


def scheduled_job_id(tenant: str, flow_run_id: str) -> str:
    """The job a schedule's flow run is: one per run, however often it is registered."""
    digest = hashlib.sha256(f"scheduled-run\x00{tenant}\x00{flow_run_id}".encode()).digest()
    return "job_" + _base32(int.from_bytes(digest[:16], "big"), 26)


def schedule_id_for_key(tenant: str, idempotency_key: str) -> str:
    """The same tenant and Idempotency-Key always name the same schedule."""
    digest = hashlib.sha256(f"schedule\x00{tenant}\x00{idempotency_key}".encode()).digest()
    return "sch_" + _base32(int.from_bytes(digest[:16], "big"), 26)


def new_schedule_id(now_ms: int | None = None) -> str:
    """A fresh schedule id, time-ordered as job ids are."""
    return "sch_" + new_job_id(now_ms).removeprefix("job_")


def fingerprint(body: Mapping[str, object]) -> str:
    """A digest of a request body that ignores key order and spacing."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _base32(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))
