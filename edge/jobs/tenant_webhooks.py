"""A tenant's default webhook: where the webhooks of a job that names none go.

Kept in the key-value store under `webhook-default:{tenant}`, with no expiry. A job takes
the default when it is submitted and keeps its own copy (marked `"default": true`), so
changing or deleting the default later never redirects the webhooks of jobs already
accepted. KV is eventually consistent: a job submitted at another location within about
a minute of a change may still get the previous default.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from edge.jobs.records import Webhook
from edge.ports import KeyValueStore
from shared.jobs import DEFAULT_WEBHOOK_EVENTS
from shared.timestamps import rfc3339


def _key(tenant: str) -> str:
    return f"webhook-default:{tenant}"


async def get_default(kv: KeyValueStore, tenant: str) -> dict[str, Any] | None:
    """The tenant's default webhook (`url`, `events`, `updated_at`), or None."""
    raw = await kv.get(_key(tenant))
    return None if raw is None else dict(json.loads(raw))


async def set_default(
    kv: KeyValueStore, tenant: str, url: str, events: Sequence[str] | None, *, now: float
) -> dict[str, Any]:
    """Store the default (its URL already checked); no `events` means the terminal ones."""
    default = {
        "url": url,
        "events": list(dict.fromkeys(events or DEFAULT_WEBHOOK_EVENTS)),
        "updated_at": rfc3339(now),
    }
    await kv.put(_key(tenant), json.dumps(default))
    return default


async def delete_default(kv: KeyValueStore, tenant: str) -> None:
    await kv.delete(_key(tenant))


async def webhook_for_job(kv: KeyValueStore, tenant: str) -> Webhook | None:
    """What a job that names no webhook records: the default as it is now, or None."""
    default = await get_default(kv, tenant)
    if default is None:
        return None
    return {"url": default["url"], "events": list(default["events"]), "default": True}
