"""Webhook URLs as the API shows them: without their query string and fragment.

Receivers often authenticate webhooks with a token in the URL (`?token=...`). edgecrew
posts to the URL exactly as given, but every answer that shows it (a job, the tenant's
default webhook) and every log line leaves the query out, marked `?…`, so nothing that
reads jobs, nor the edge's logs, hands the token on. A webhook's body never names its URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

ELIDED = "…"


def shown_url(url: str) -> str:
    """`https://host[:port]/path`, then `?…` (and `#…`) where the URL had a query (a fragment)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a URL checked on its way in always parses; this one did not
        return ELIDED
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    shown = f"{parts.scheme}://{host}{'' if port is None else f':{port}'}{parts.path}"
    if parts.query:
        shown += f"?{ELIDED}"
    if parts.fragment:
        shown += f"#{ELIDED}"
    return shown


def shown_host(url: str) -> str:
    """The host (and port) alone, for log lines."""
    try:
        parts = urlsplit(url)
        return parts.netloc.rpartition("@")[2] or "?"
    except ValueError:
        return "?"


def shown_webhook(webhook: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A job's (or the tenant's default) webhook, its URL shown as `shown_url` does."""
    if not webhook:
        return None
    return {**webhook, "url": shown_url(str(webhook["url"]))}
