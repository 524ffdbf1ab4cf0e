"""The crew catalog in KV: one key per crew, listed across pages, corrupt entries skipped."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from edge.jobs import catalog
from edge.local.sqlite_kv import SqliteKV
from edge.ports import KVListPage
from shared.crews import CATALOG_PREFIX
from tests.doubles.catalog import RESEARCH, SUMMARIZE, publish_shipped_crews

NOW = 1_800_000_000.0


class SmallPages(SqliteKV):
    """A store that lists two keys per page, whatever the caller asks for."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.list_calls = 0

    async def list(
        self, *, prefix: str = "", limit: int = 1000, cursor: str | None = None
    ) -> KVListPage:
        self.list_calls += 1
        return await super().list(prefix=prefix, limit=2, cursor=cursor)


@pytest.fixture
def kv(tmp_path: Path) -> SmallPages:
    return SmallPages(tmp_path / "kv.sqlite3")


async def test_publish_writes_one_key_per_crew(kv: SmallPages) -> None:
    assert await publish_shipped_crews(kv, NOW) == ["research", "summarize"]
    stored = json.loads(await kv.get(CATALOG_PREFIX + "research") or "")
    assert stored == {**RESEARCH.public(), "published_by": "test-worker",
                      "published_at": "2027-01-15T08:00:00.000Z"}  # fmt: skip
    assert await catalog.get_crew(kv, "summarize") == SUMMARIZE
    assert await catalog.get_crew(kv, "nope") is None


async def test_listing_follows_cursors_and_sorts_by_name(kv: SmallPages) -> None:
    names = ["e", "a", "d", "b", "c"]
    specs = [dataclasses.replace(SUMMARIZE, name=name) for name in names]
    await catalog.publish(kv, "w", specs, NOW)
    listed = await catalog.list_crews(kv)
    assert [entry.spec.name for entry in listed] == sorted(names)
    assert kv.list_calls == 3, "five keys, two per page"
    assert listed[0].public() == {**specs[1].public(), "published_at": "2027-01-15T08:00:00.000Z"}
    assert await catalog.crew_names(kv) == sorted(names)


async def test_publishers_of_other_pools_do_not_overwrite_each_other(kv: SmallPages) -> None:
    await catalog.publish(kv, "gpu-worker", [RESEARCH], NOW)
    await catalog.publish(kv, "cpu-worker", [SUMMARIZE], NOW)
    listed = await catalog.list_crews(kv)
    assert [(e.spec.name, e.published_by) for e in listed] == [
        ("research", "gpu-worker"),
        ("summarize", "cpu-worker"),
    ]


async def test_a_new_version_replaces_the_entry_and_is_logged(
    kv: SmallPages, caplog: pytest.LogCaptureFixture
) -> None:
    await catalog.publish(kv, "w-old", [RESEARCH], NOW)
    newer = dataclasses.replace(RESEARCH, version="0.2.0+abc")
    with caplog.at_level(logging.INFO, logger="edgecrew.catalog"):
        await catalog.publish(kv, "w-new", [newer], NOW + 60)
        await catalog.publish(kv, "w-new", [newer], NOW + 120)  # same version: no line
    assert await catalog.get_crew(kv, "research") == newer
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        f"crew research: version {RESEARCH.version} -> 0.2.0+abc (published by w-new; was by w-old)"
    )


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "[]",
        json.dumps({**SUMMARIZE.public(), "published_by": "w", "published_at": "t"}),  # wrong key
        json.dumps(
            {**RESEARCH.public(), "pool": "Not A Pool", "published_by": "w", "published_at": "t"}
        ),
        json.dumps(RESEARCH.public()),  # no published_by / published_at
    ],
    ids=["not-json", "not-an-object", "another-crews-entry", "invalid-entry", "unstamped"],
)
async def test_corrupt_entries_are_skipped_with_a_warning(
    kv: SmallPages, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    await catalog.publish(kv, "w", [SUMMARIZE], NOW)
    await kv.put(CATALOG_PREFIX + "research", raw)
    with caplog.at_level(logging.WARNING, logger="edgecrew.catalog"):
        listed = await catalog.list_crews(kv)
        assert await catalog.get_crew(kv, "research") is None
    assert [entry.spec.name for entry in listed] == ["summarize"]
    assert all("corrupt catalog entry catalog:crew:research" in r.getMessage()
               for r in caplog.records) and len(caplog.records) == 2  # fmt: skip


async def test_a_corrupt_entry_does_not_stop_a_new_publish(kv: SmallPages) -> None:
    await kv.put(CATALOG_PREFIX + "research", "{not json")
    await catalog.publish(kv, "w", [RESEARCH], NOW)
    assert await catalog.get_crew(kv, "research") == RESEARCH
