"""Client webhook delivery: sign, post, log, and say when to retry.

Standard Webhooks headers (same `webhook-id` on every retry of one event, a fresh
timestamp and signature per attempt). 2xx within 15 s is success; redirects are never
followed; `410 Gone` stops retries; anything else retries with exponential backoff and
"equal jitter" (uniform between half and all of the ceiling) for at least 24 hours. The
URL is checked again before every attempt. Every attempt is logged on its job, with why
it failed (`edge.jobs.delivery_log`); a redelivery someone asked for is tried once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from edge.jobs.delivery_log import (
    CONNECTION_FAILED,
    Attempt,
    answered,
    entry,
    failed,
    not_signed,
    refused,
)
from edge.jobs.store import JobStore
from edge.jobs.webhook_urls import (
    UnsafeWebhookUrl,
    check_resolved_host,
    check_webhook_url,
    pinned_url,
)
from edge.jobs.webhook_views import shown_host
from edge.settings import Settings
from shared.signing import derived_secret, signed_headers

log = logging.getLogger("edgecrew.webhooks")

DELIVERY_WINDOW_SECONDS = 26 * 3600  # retries go on for at least 24 h
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 6 * 3600  # under Cloudflare Queues' 12 h delay ceiling
TIMEOUT_SECONDS = 15.0
MAX_LOGGED_DELIVERIES = 50


def retry_delay(attempt: int, rng: Callable[[float, float], float] = random.uniform) -> int:
    """Seconds before attempt `attempt + 1`: exponential, capped, then jittered.

    Uniform over [ceiling / 2, ceiling] rather than full jitter's [0, ceiling]: retries of
    many webhooks still spread out, and no retry comes back sooner than half its step
    (full jitter can retry a failing receiver within a second, several times in a row).
    """
    ceiling = min(FIRST_RETRY_SECONDS * 2 ** (attempt - 1), MAX_RETRY_SECONDS)
    return max(1, int(rng(ceiling / 2, ceiling)))


class WebhookSender:
    """Delivers one queued webhook message; returns the retry delay, or None when done."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        resolve_dns: bool = False,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        timeout_seconds: float = TIMEOUT_SECONDS,
    ) -> None:
        self._store = store
        self._settings = settings
        self._client = client or httpx.AsyncClient(
            follow_redirects=False,
            # With DNS pinning the URL holds the checked IP, and httpx pools connections
            # by (scheme, IP, port): a connection opened for one host (its TLS name
            # checked) would carry the next host's webhook on the same IP unchecked. So
            # no connection outlives its request, and no proxy from the environment
            # (it would resolve the name again, and verify TLS against the IP).
            limits=httpx.Limits(max_keepalive_connections=0 if resolve_dns else 20),
            trust_env=not resolve_dns,
            transport=transport,
        )
        self._resolve_dns = resolve_dns  # CPython only; Workers cannot reach private networks
        self._clock = clock
        self._timer = timer  # durations: a clock that never jumps
        self._timeout = timeout_seconds

    async def deliver(self, message: Mapping[str, Any]) -> int | None:
        tenant, job_id = str(message["tenant"]), str(message["job_id"])
        started, began = self._clock(), self._timer()
        attempt = await self._post(message)
        duration = self._timer() - began
        if attempt.tried and int(message["attempt"]) == 1 and not message.get("redelivery"):
            await self._remember(message, at=started)
        delay, gave_up = self._next(message, attempt)
        retry_at = None if delay is None else self._clock() + delay
        logged = entry(
            message, attempt, started=started, duration=duration, retry_at=retry_at,
            gave_up=gave_up,
        )  # fmt: skip
        await self._store.log_delivery(tenant, job_id, logged, keep=MAX_LOGGED_DELIVERIES)
        return delay

    async def _remember(self, message: Mapping[str, Any], *, at: float) -> None:
        """Keep the webhook for `POST /v1/jobs/{id}/deliveries/redeliver` (its exact body
        and id). Bookkeeping only: a KV write refused (Workers KV allows one write a
        second to a key) costs that redelivery, never the delivery itself."""
        try:
            await self._store.remember_webhook(
                str(message["tenant"]), str(message["job_id"]), message, at=at
            )
        except Exception as exc:  # any KV failure: logged, never raised
            log.warning("webhook %s not kept for redelivery: %s", message["message_id"],
                        type(exc).__name__)  # fmt: skip

    def _next(self, message: Mapping[str, Any], attempt: Attempt) -> tuple[int | None, str]:
        """The delay before the next attempt (None: no more), and why there is none."""
        if attempt.delivered or not attempt.retryable:
            return None, ""
        if message.get("redelivery"):  # asked for by a person, who sees how it went
            return None, "a redelivery is tried once"
        number = int(message["attempt"])
        if self._clock() - float(message["first_attempt_at"]) > DELIVERY_WINDOW_SECONDS:
            log.warning("giving up on %s after %d attempts", message["message_id"], number)
            return None, f"gave up after {number} attempts in {DELIVERY_WINDOW_SECONDS // 3600} h"
        return retry_delay(number), ""

    async def _post(self, message: Mapping[str, Any]) -> Attempt:
        url = str(message["url"])
        try:
            targets = await self._targets(url)
        except UnsafeWebhookUrl as exc:
            log.warning("not delivering %s: %s", message["message_id"], exc)
            return refused(exc)
        if not self._settings.secret_key:  # never sign with a guessable key
            log.warning("not delivering %s: EDGECREW_SECRET_KEY is not set", message["message_id"])
            return not_signed()
        body = json.dumps(message["payload"]).encode()
        secret = derived_secret(self._settings.secret_key, f"webhooks:{message['tenant']}")
        headers = signed_headers(secret, str(message["message_id"]), int(self._clock()), body)
        headers |= {"Content-Type": "application/json", "User-Agent": "edgecrew-webhooks/1"}
        try:
            # One deadline for the whole attempt, every address of the host included:
            # httpx's timeout is per connect or read, so a receiver trickling its answer,
            # or addresses that each time out, would hold the consumer for longer.
            return await asyncio.wait_for(
                self._send(message, targets, body, headers), self._timeout
            )
        except TimeoutError as exc:
            outcome = failed(exc, self._timeout)
            log.info("webhook %s attempt failed: %s", message["message_id"], outcome.error)
            return outcome

    async def _send(
        self,
        message: Mapping[str, Any],
        targets: list[tuple[str, dict[str, str], dict[str, Any]]],
        body: bytes,
        headers: dict[str, str],
    ) -> Attempt:
        """POST to the host's checked addresses in turn, until one answers."""
        unreachable = Attempt(error=CONNECTION_FAILED, detail="no address to connect to")
        for target, extra_headers, extensions in targets:
            try:
                response = await self._client.post(
                    target,
                    content=body,
                    headers=headers | extra_headers,
                    timeout=self._timeout,
                    extensions=extensions,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent: the host's next checked address may answer (a
                # dual-stack host whose IPv6 route is down, one dead server of several).
                unreachable = failed(exc, self._timeout)
                # The host only: the URL's query may carry the receiver's token.
                log.info("webhook %s: an address of %s is unreachable (%s)",
                         message["message_id"], shown_host(target), unreachable.error)  # fmt: skip
                continue
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                # InvalidURL is no HTTPError (retrying cannot fix it).
                outcome = failed(exc, self._timeout)
                log.info("webhook %s attempt failed: %s", message["message_id"], outcome.error)
                return outcome
            return answered(response.status_code)
        return unreachable  # no address answered: retried later

    async def _targets(self, url: str) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        """Where to send: (URL, extra headers, httpx extensions) per address to try.

        Raises UnsafeWebhookUrl for a URL (or, locally, a resolved address) the SSRF
        guard refuses.
        """
        allow_loopback = self._settings.allow_loopback_webhooks
        check_webhook_url(url, allow_loopback_http=allow_loopback)
        if not self._resolve_dns:
            return [(url, {}, {})]
        parts = urlsplit(url)
        hostname = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = await check_resolved_host(hostname, port, allow_loopback=allow_loopback)
        # Connect to the addresses just checked (no second lookup to rebind), while the
        # server still sees its own name in Host and, for TLS, SNI + the certificate.
        extensions = {"sni_hostname": hostname} if parts.scheme == "https" else {}
        targets = []
        for address in addresses:
            target, host_header = pinned_url(url, address)
            targets.append((target, {"Host": host_header}, extensions))
        return targets


def next_attempt(message: Mapping[str, Any]) -> dict[str, Any]:
    """The same message, one attempt later (same webhook-id)."""
    return {**message, "attempt": int(message["attempt"]) + 1}
