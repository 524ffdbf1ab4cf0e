"""The Worker's queue and cron handlers, over binding doubles."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import respx

from edge.adapters.cloudflare import CloudflareQueue, build_cloudflare_ports, env_mapping
from edge.app import create_app
from edge.handlers import handle_batch, reconcile
from edge.jobs.reconciler import RECONCILE_BUDGET
from edge.schedules.adoption import ADOPT_BUDGET
from edge.schedules.service import SWEEP_BUDGET
from edge.settings import Settings
from tests.conftest import KEY_A
from tests.doubles.cloudflare_bindings import (
    FakeAI,
    FakeKVNamespace,
    FakeQueueMessage,
    FakeQueueProducer,
    FakeVectorize,
)
from tests.doubles.models import bag_of_words_vector

HOOK = "https://app.example.com/hooks"


def worker_app() -> tuple[object, SimpleNamespace]:
    env = SimpleNamespace(
        KV=FakeKVNamespace(),
        VECTORIZE=FakeVectorize(384),
        AI=FakeAI(bag_of_words_vector),
        WEBHOOKS=FakeQueueProducer(),
        EDGECREW_API_KEYS=f"tenant_a:{KEY_A}",
        EDGECREW_SECRET_KEY="s" * 40,
    )
    settings = Settings.from_env(env_mapping(env))
    return create_app(settings, build_cloudflare_ports(env, settings)), env


def webhook_message(attempt: int = 1) -> dict[str, object]:
    return {
        "tenant": "tenant_a", "job_id": "job_x", "event": "job.succeeded", "url": HOOK,
        "message_id": "msg_1", "attempt": attempt, "first_attempt_at": time.time(),
        "payload": {"type": "job.succeeded", "timestamp": "t", "data": {"id": "job_x"}},
    }  # fmt: skip


async def test_queue_producer_gets_body_and_capped_delay() -> None:
    producer = FakeQueueProducer()
    queue = CloudflareQueue(producer)
    await queue.send({"a": 1})
    await queue.send({"a": 2}, delay_seconds=90_000)
    assert producer.sent == [({"a": 1}, None), ({"a": 2}, {"delaySeconds": 43_200})]


@respx.mock
async def test_batch_acks_all_and_requeues_failures_with_a_delay() -> None:
    app, env = worker_app()
    respx.post(HOOK).mock(side_effect=[respx.MockResponse(200), respx.MockResponse(503)])
    ok, failing = FakeQueueMessage(webhook_message()), FakeQueueMessage(webhook_message(3))
    await handle_batch(app, [ok, failing])  # type: ignore[arg-type]
    assert ok.acked and failing.acked
    ((body, options),) = env.WEBHOOKS.sent
    assert body["attempt"] == 4 and body["message_id"] == "msg_1"
    assert 60 <= options["delaySeconds"] <= 120


async def test_cron_runs_a_reconciler_pass_without_an_orchestrator() -> None:
    app, _ = worker_app()
    counts = await reconcile(app)  # type: ignore[arg-type]
    assert counts == {"checked": 0, "changed": 0, "schedules_removed": 0, "runs_adopted": 0}


async def test_cron_does_the_schedules_chores_within_their_share_even_when_the_pass_fails() -> None:
    app, _ = worker_app()
    asked: dict[str, object] = {}

    async def failing_pass(**options: int) -> dict[str, int]:
        asked.update(options)
        raise RuntimeError("KV away")

    async def sweep() -> int:
        asked["swept"] = True
        return 1

    async def failing_sweep() -> int:
        asked["swept"] = True
        raise RuntimeError("Prefect away")

    async def adopt() -> int:
        asked["adopted"] = True
        return 0

    app.state.jobs.reconcile = failing_pass
    app.state.schedules.sweep = sweep
    app.state.schedules.adopt_lost_runs = adopt
    with pytest.raises(RuntimeError, match="KV away"):
        await reconcile(app)  # type: ignore[arg-type]
    assert asked["swept"] is True and asked["adopted"] is True
    assert asked["budget"] == RECONCILE_BUDGET - SWEEP_BUDGET - ADOPT_BUDGET
    asked.clear()
    app.state.schedules.sweep = failing_sweep
    with pytest.raises(RuntimeError, match="KV away"):
        await reconcile(app)  # type: ignore[arg-type]
    assert asked["adopted"] is True, "a failed sweep does not skip the adoption"
