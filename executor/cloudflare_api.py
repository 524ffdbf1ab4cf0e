"""What the executor's Cloudflare REST calls share: reading Cloudflare's error answers."""

from __future__ import annotations

from typing import Any


def cloudflare_error(response: Any) -> str:
    """What Cloudflare's API said went wrong (`: errors[0].message`), briefly, or "".

    Its answers are `{"success": false, "errors": [{"code", "message"}], ...}`; the
    message is safe to show (it never echoes the token), the request's URL and headers
    are left out.
    """
    try:
        errors = response.json().get("errors") or []
        message = str(errors[0].get("message", ""))[:200] if errors else ""
    except (ValueError, AttributeError, TypeError, IndexError):
        return ""
    return f": {message}" if message else ""
