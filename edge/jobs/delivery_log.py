"""What one webhook delivery attempt came to, in words a client can act on.

Every attempt is logged on its job (`GET /v1/jobs/{id}` `deliveries`, and
`GET /v1/jobs/{id}/deliveries`): whether it was delivered, will be tried again or was
given up, the kind of failure and a short detail. Details are edgecrew's own words plus
facts it decided on (status codes, the SSRF guard's reason): never the receiver's body
nor an exception's raw text, which can carry URLs with tokens in them.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from edge.jobs.webhook_urls import HostDoesNotResolve, UnsafeWebhookUrl
from shared.timestamps import rfc3339

DELIVERED = "delivered"
RETRYING = "retrying"
GAVE_UP = "gave_up"

#: Failure kinds, as the log names them (docs/api.md lists them).
HTTP_STATUS = "http_status"
TIMEOUT = "timeout"
CONNECTION_REFUSED = "connection_refused"
DNS_FAILURE = "dns_failure"
TLS_ERROR = "tls_error"
CONNECTION_FAILED = "connection_failed"
NETWORK_ERROR = "network_error"
URL_REFUSED = "url_refused"
NOT_SIGNED = "not_signed"
INVALID_URL = "invalid_url"


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one POST: an HTTP status, or why there was none."""

    status_code: int | None = None
    error: str | None = None
    detail: str = ""
    retryable: bool = True

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def tried(self) -> bool:
        """Whether edgecrew tried to reach the receiver (answered or not), as against a
        webhook refused before any POST (an unsafe or unusable URL, no signing key)."""
        return self.status_code is not None or self.retryable


def answered(status: int) -> Attempt:
    """An HTTP answer: 2xx is delivered, 410 stops retries, anything else is retried."""
    text = f"HTTP {status} {httpx.codes.get_reason_phrase(status)}".rstrip()
    if 200 <= status < 300:
        return Attempt(status, detail=text)
    if status == 410:
        return Attempt(status, HTTP_STATUS, f"{text}: the receiver asked for no more", False)
    return Attempt(status, HTTP_STATUS, text)


def refused(exc: UnsafeWebhookUrl) -> Attempt:
    """The SSRF guard's verdict (its reasons are ours); a name that does not resolve may
    resolve later, an unsafe URL stays unsafe."""
    if isinstance(exc, HostDoesNotResolve):
        return Attempt(error=DNS_FAILURE, detail="the host name does not resolve")
    return Attempt(error=URL_REFUSED, detail=f"the URL is not allowed: {exc}", retryable=False)


def not_signed() -> Attempt:
    return Attempt(error=NOT_SIGNED, detail="EDGECREW_SECRET_KEY is not set", retryable=False)


def failed(exc: BaseException, timeout: float) -> Attempt:
    """An attempt that raised instead of answering."""
    if isinstance(exc, httpx.ConnectTimeout):
        return Attempt(error=TIMEOUT, detail=f"could not connect within {timeout:g} s")
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return Attempt(error=TIMEOUT, detail=f"no answer within {timeout:g} s")
    if isinstance(exc, httpx.ConnectError):
        return _connect_failure(exc)
    if isinstance(exc, httpx.InvalidURL):  # not an HTTPError; retrying cannot fix it
        return Attempt(error=INVALID_URL, detail="the URL cannot be requested", retryable=False)
    return Attempt(error=NETWORK_ERROR, detail=f"no HTTP answer ({type(exc).__name__})")


def _connect_failure(exc: httpx.ConnectError) -> Attempt:
    """Refused, unresolvable, TLS or other: from the OS error under httpx's (CPython), or
    from the words of the runtime's fetch() error (Workers, `FetchTransport`)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or "not accepted"
            return Attempt(error=TLS_ERROR, detail=f"TLS certificate: {reason}")
        if isinstance(cause, ssl.SSLError):
            return Attempt(error=TLS_ERROR, detail=f"TLS handshake failed: {cause.reason}")
        if isinstance(cause, ConnectionRefusedError):
            return Attempt(error=CONNECTION_REFUSED, detail="connection refused")
        if isinstance(cause, socket.gaierror):
            return Attempt(error=DNS_FAILURE, detail="the host name does not resolve")
        cause = cause.__cause__ or cause.__context__
    words = str(exc).lower()
    if any(w in words for w in ("certificate", "ssl", "tls")):
        return Attempt(error=TLS_ERROR, detail="TLS handshake failed")
    if "refused" in words:
        return Attempt(error=CONNECTION_REFUSED, detail="connection refused")
    if any(w in words for w in ("dns", "resolve", "not known")):
        return Attempt(error=DNS_FAILURE, detail="the host name does not resolve")
    return Attempt(error=CONNECTION_FAILED, detail="could not connect")


def entry(
    message: Mapping[str, Any],
    attempt: Attempt,
    *,
    started: float,
    duration: float,
    retry_at: float | None,
    gave_up: str = "",
) -> dict[str, Any]:
    """The log line of one attempt (the first four fields are the original shape)."""
    outcome = _outcome(attempt, retry_at)
    detail = f"{attempt.detail}; {gave_up}" if gave_up and outcome == GAVE_UP else attempt.detail
    return {
        "event": message["event"],
        "attempt": int(message["attempt"]),
        "status_code": attempt.status_code,
        "at": rfc3339(started, timespec="seconds"),
        "message_id": message["message_id"],
        "redelivery": bool(message.get("redelivery")),
        "outcome": outcome,
        "error": attempt.error,
        "detail": detail,
        "duration_ms": max(0, round(duration * 1000)),
        "next_attempt_at": None if retry_at is None else rfc3339(retry_at, timespec="seconds"),
    }


def _outcome(attempt: Attempt, retry_at: float | None) -> str:
    if attempt.delivered:
        return DELIVERED
    return GAVE_UP if retry_at is None else RETRYING
