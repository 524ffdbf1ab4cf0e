"""The truth behind `edgecrew dev`'s "ready": each part really did its job once.

A server that answers its health URL can still crash on the first real prompt (it did:
a llama.cpp build for another CPU served `/v1/models` and died in `llama_decode`), so
this asks for a real multi-token generation, a real embedding through the edge, and the
edge's own dependency probes (`GET /readyz`, which includes a Prefect round trip).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

#: A cold CPU model's first generation, or the embedder's first load (torch and
#: MiniLM), can take a while on a busy machine; the rest answers in milliseconds.
GENERATION_TIMEOUT = 120.0
EMBEDDING_TIMEOUT = 120.0
TIMEOUT = 30.0
#: Workers load their crews (CrewAI's import, then each crew built once) before they
#: publish them.
CATALOG_WAIT = 90.0


def stack_problems(
    base_url: str,
    api_key: str,
    *,
    llm_base_url: str,
    llm_model: str,
    llm_api_key: str | None = None,
) -> list[str]:
    """What is not ready, one line per part ('llm: …'); empty when everything is."""
    checks: list[Callable[[], str | None]] = [
        lambda: _generation(llm_base_url, llm_model, llm_api_key),
        lambda: _embedding(base_url, api_key),
        lambda: _dependencies(base_url),
    ]
    problems = []
    for check in checks:
        try:
            problem = check()
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            problems.append(problem)
    return problems


def _generation(base_url: str, model: str, api_key: str | None) -> str | None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the new developer, please."}],
        "max_tokens": 8,
        "temperature": 0,
    }
    url = f"{base_url.rstrip('/')}/chat/completions"
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=GENERATION_TIMEOUT)
    except httpx.HTTPError as exc:
        return f"llm: no generation from {url} ({type(exc).__name__}: {exc})"
    if response.status_code != 200:
        return f"llm: generation answered HTTP {response.status_code}: {response.text[:300]}"
    try:
        reply = response.json()
        tokens = (reply.get("usage") or {}).get("completion_tokens")
        content = str(reply["choices"][0]["message"].get("content") or "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return f"llm: not an OpenAI chat completion: {response.text[:300]}"
    if (tokens if isinstance(tokens, int) else len(content.split())) < 2 or not content.strip():
        return f"llm: a generation of fewer than two tokens: {reply!r:.300}"
    return None


def _embedding(base_url: str, api_key: str) -> str | None:
    response = httpx.post(
        f"{base_url}/v1/search",
        json={"query": "Is the embedder ready?", "top_k": 1},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=EMBEDDING_TIMEOUT,
    )
    if response.status_code != 200:
        return (
            f"embedder: a search through the edge answered HTTP {response.status_code}: "
            + (response.text[:300])
        )
    return None


def _dependencies(base_url: str) -> str | None:
    response = httpx.get(f"{base_url}/readyz", timeout=TIMEOUT)
    if response.status_code == 200:
        return None
    if response.status_code == 404:  # an edge without the probe route cannot vouch for them
        return "edge: GET /readyz is missing"
    return f"edge: GET /readyz answered {response.status_code}: {response.text[:500]}"


def catalog_problems(
    base_url: str,
    api_key: str,
    names: list[str],
    workers: dict[str, str],
    *,
    wait_seconds: float = CATALOG_WAIT,
) -> list[str]:
    """Wait until every worker says it published its crews (the edge keeps entries
    from earlier runs, so listing alone could pass on stale ones) and `GET /v1/crews`
    lists every configured crew; a job for an unlisted crew is a 422."""
    deadline = time.monotonic() + wait_seconds
    while True:
        waiting = [name for name, url in workers.items() if not _published(url)]
        missing = [] if waiting else _unlisted(base_url, api_key, names)
        if not waiting and not missing:
            return []
        if time.monotonic() > deadline:
            if waiting:
                return [f"crews: {', '.join(waiting)} did not publish its crews (see its log)"]
            return [f"crews: the edge does not list {', '.join(missing)}"]
        time.sleep(0.5)


def _published(health_url: str) -> bool:
    try:
        return bool(httpx.get(health_url, timeout=TIMEOUT).json().get("published"))
    except (httpx.HTTPError, ValueError):
        return False


def _unlisted(base_url: str, api_key: str, names: list[str]) -> list[str]:
    try:
        response = httpx.get(
            f"{base_url}/v1/crews", headers={"Authorization": f"Bearer {api_key}"}, timeout=TIMEOUT
        )
        response.raise_for_status()
        listed = {crew["name"] for crew in response.json()["crews"]}
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return names
    return [name for name in names if name not in listed]
