"""One contract for every KeyValueStore adapter that runs here."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.adapters.cloudflare import CloudflareKV
from edge.local.sqlite_kv import SqliteKV
from edge.ports import KeyValueStore
from tests.conftest import Clock
from tests.doubles.cloudflare_bindings import FakeKVNamespace


@pytest.fixture(params=["sqlite", "cloudflare"])
def kv(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> KeyValueStore:
    if request.param == "sqlite":
        return SqliteKV(tmp_path / "kv.sqlite3", clock=clock)
    return CloudflareKV(FakeKVNamespace(clock=clock))


async def test_missing_key_is_none(kv: KeyValueStore) -> None:
    assert await kv.get("nope") is None
    assert await kv.get_with_metadata("nope") is None


async def test_put_then_get_and_overwrite(kv: KeyValueStore) -> None:
    await kv.put("k", "one")
    assert await kv.get("k") == "one"
    await kv.put("k", "two")
    assert await kv.get("k") == "two"


async def test_empty_value_is_a_value(kv: KeyValueStore) -> None:
    await kv.put("empty", "")
    assert await kv.get("empty") == ""


async def test_metadata_round_trips(kv: KeyValueStore) -> None:
    await kv.put("k", "v", metadata={"status": "queued", "n": 3})
    entry = await kv.get_with_metadata("k")
    assert entry is not None
    assert (entry.value, entry.metadata) == ("v", {"status": "queued", "n": 3})


async def test_delete_removes_and_is_idempotent(kv: KeyValueStore) -> None:
    await kv.put("k", "v")
    await kv.delete("k")
    await kv.delete("k")
    assert await kv.get("k") is None


async def test_ttl_expires(kv: KeyValueStore, clock: Clock) -> None:
    await kv.put("short", "v", ttl_seconds=60)
    clock.advance(59)
    assert await kv.get("short") == "v"
    clock.advance(2)
    assert await kv.get("short") is None
    assert (await kv.list(prefix="short")).keys == []


async def test_ttl_below_sixty_seconds_is_refused(kv: KeyValueStore) -> None:
    with pytest.raises((ValueError, RuntimeError)):
        await kv.put("k", "v", ttl_seconds=30)


async def test_list_by_prefix_in_key_order_with_cursor(kv: KeyValueStore, clock: Clock) -> None:
    for name in ["job:b", "job:a", "job:c", "other:x", "job:d"]:
        await kv.put(name, "v", metadata={"name": name})
    await kv.put("job:e", "v", ttl_seconds=120)
    first = await kv.list(prefix="job:", limit=2)
    assert [k.name for k in first.keys] == ["job:a", "job:b"]
    assert first.keys[0].metadata == {"name": "job:a"}
    assert first.cursor is not None
    second = await kv.list(prefix="job:", limit=2, cursor=first.cursor)
    assert [k.name for k in second.keys] == ["job:c", "job:d"]
    third = await kv.list(prefix="job:", limit=2, cursor=second.cursor)
    assert [k.name for k in third.keys] == ["job:e"]
    assert third.keys[0].expiration == int(clock.now) + 120
    assert third.cursor is None


async def test_list_without_prefix_sees_everything(kv: KeyValueStore) -> None:
    await kv.put("a", "1")
    await kv.put("b", "2")
    page = await kv.list()
    assert [k.name for k in page.keys] == ["a", "b"]
    assert page.cursor is None


async def test_sqlite_purge_frees_only_expired_rows(tmp_path: Path, clock: Clock) -> None:
    kv = SqliteKV(tmp_path / "kv.sqlite3", clock=clock)
    await kv.put("short", "v", ttl_seconds=60)
    await kv.put("long", "v", ttl_seconds=600)
    await kv.put("forever", "v")
    clock.advance(61)
    assert kv.purge_expired() == 1
    assert [k.name for k in (await kv.list()).keys] == ["forever", "long"]
