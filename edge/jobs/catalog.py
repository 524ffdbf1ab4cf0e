"""The crew catalog in the key-value store: what the workers published, one key per crew.

Key `catalog:crew:{name}` (`shared.crews.CATALOG_PREFIX`) holds
`{**CrewSpec.public(), "published_by": worker, "published_at": rfc3339}`. One key per
crew, not one catalog key: workers of different pools publish at the same moment when
they start, KV has no compare-and-swap, and a single key would lose one of the two
writes. The last publish of a crew wins.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge.ports import KeyValueStore
from shared.crews import CATALOG_PREFIX, CrewSpec
from shared.timestamps import rfc3339

log = logging.getLogger("edgecrew.catalog")


@dataclass(frozen=True, slots=True)
class PublishedCrew:
    """A catalog entry: the crew as its worker described it, and who published it when."""

    spec: CrewSpec
    published_by: str
    published_at: str

    def public(self) -> dict[str, Any]:
        """The entry as `GET /v1/crews` lists it (the worker's name stays internal)."""
        return {**self.spec.public(), "published_at": self.published_at}


async def get_crew(kv: KeyValueStore, name: str) -> CrewSpec | None:
    """The published crew `name`, or None when no worker published it (or it is corrupt)."""
    entry = await _read(kv, CATALOG_PREFIX + name)
    return None if entry is None else entry.spec


async def list_crews(kv: KeyValueStore) -> list[PublishedCrew]:
    """Every published crew, sorted by name; corrupt entries are skipped (and logged)."""
    entries = [await _read(kv, key) for key in await _catalog_keys(kv)]
    return sorted((e for e in entries if e is not None), key=lambda e: e.spec.name)


async def crew_names(kv: KeyValueStore) -> list[str]:
    """The names in the catalog, from the key listing alone (no entry is read)."""
    return sorted(key.removeprefix(CATALOG_PREFIX) for key in await _catalog_keys(kv))


async def publish(
    kv: KeyValueStore, worker: str, specs: Sequence[CrewSpec], now: float
) -> list[str]:
    """Store each crew under its own key; returns the names published."""
    published_at = rfc3339(now)
    for spec in specs:
        key = CATALOG_PREFIX + spec.name
        _log_version_change(await _read(kv, key), spec, worker)
        entry = {**spec.public(), "published_by": worker, "published_at": published_at}
        await kv.put(key, json.dumps(entry))
    return [spec.name for spec in specs]


def _log_version_change(before: PublishedCrew | None, spec: CrewSpec, worker: str) -> None:
    # Workers running different versions of one crew overwrite each other's entry; this
    # line is how an operator sees that happen (docs/executor.md explains the case).
    if before is not None and before.spec.version != spec.version:
        log.info(
            "crew %s: version %s -> %s (published by %s; was by %s)",
            spec.name, before.spec.version or "-", spec.version or "-", worker,
            before.published_by,
        )  # fmt: skip


async def _catalog_keys(kv: KeyValueStore) -> list[str]:
    """Every key under the catalog prefix, following the listing's cursors."""
    keys: list[str] = []
    cursor: str | None = None
    while True:
        page = await kv.list(prefix=CATALOG_PREFIX, cursor=cursor)
        keys.extend(key.name for key in page.keys)
        if page.cursor is None or page.cursor == cursor:
            return keys
        cursor = page.cursor


async def _read(kv: KeyValueStore, key: str) -> PublishedCrew | None:
    """The entry at `key`; None when absent, or unreadable (a warning, never a 500)."""
    raw = await kv.get(key)
    if raw is None:
        return None
    try:
        return _parse(key, raw)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and CatalogError among them
        log.warning("skipping corrupt catalog entry %s: %s", key, exc)
        return None


# Every POST /v1/jobs reads its crew's entry; the entry changes only when a worker
# publishes, so the same text is parsed (and its schema checked) once, not per request.
# The entries are frozen; a corrupt one raises again each time, so it is never cached.
@functools.lru_cache(maxsize=256)
def _parse(key: str, raw: str) -> PublishedCrew:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("the entry is not an object")
    spec = CrewSpec.from_public(data)
    if CATALOG_PREFIX + spec.name != key:
        raise ValueError(f"the entry names crew {spec.name!r}")
    published_by, published_at = data.get("published_by"), data.get("published_at")
    if not isinstance(published_by, str) or not isinstance(published_at, str):
        raise ValueError("published_by and published_at must be strings")
    return PublishedCrew(spec=spec, published_by=published_by, published_at=published_at)
