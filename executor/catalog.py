"""The crews this worker offers: loaded and checked at start, then published to the edge.

`GET /v1/crews` and the edge's input checks come from what workers publish, so adding a
crew is restarting workers with it configured, never redeploying the Worker.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from executor.config import ConfigError, EdgecrewConfig, load_config
from executor.edge_client import EdgeClient, EdgeUnreachable
from executor.human_input import missing_crewai_hooks
from executor.loaded_crew import CrewLoadError, LoadedCrew, load
from executor.run_context import default_llm_hook_available

log = logging.getLogger("edgecrew.catalog")


@dataclass
class Catalog:
    crews: dict[str, LoadedCrew] = field(default_factory=dict)
    errors: list[CrewLoadError] = field(default_factory=list)


def load_catalog(config: EdgecrewConfig, pool: str | None = None) -> Catalog:
    """Load every configured crew (of `pool`, when given), collecting what fails."""
    catalog = Catalog()
    for name, entry in sorted(config.crews.items()):
        if pool is not None and entry.pool != pool:
            continue
        try:
            catalog.crews[name] = load(entry)
        except CrewLoadError as exc:
            catalog.errors.append(exc)
    return catalog


def check_runtime() -> list[str]:
    """What this CrewAI lacks that edgecrew relies on (empty when all is there)."""
    problems = []
    if not default_llm_hook_available():
        problems.append(
            "crewai.utilities.llm_utils._llm_via_environment_or_fallback is gone: "
            "agents that name no LLM cannot get the executor's (pin crewai 1.15)"
        )
    problems += [
        f"{name} is gone: human_input tasks cannot ask through the job (pin crewai 1.15)"
        for name in missing_crewai_hooks()
    ]
    from executor import flow_feedback  # imports CrewAI: only where a check is asked for

    problems += [
        f"{name} is gone: @human_feedback steps cannot ask through the job (pin crewai 1.15)"
        for name in flow_feedback.missing_crewai_hooks()
    ]
    return problems


@functools.cache
def crew_for_run(name: str) -> LoadedCrew:
    """The crew a flow run asked for, from this process's config (cached per process)."""
    config = load_config()
    entry = config.crews.get(name)
    if entry is None:
        offered = ", ".join(sorted(config.crews)) or "none"
        raise LookupError(f"crew {name!r} is not configured on this worker (it offers {offered})")
    return load(entry)


def publish_until_taken(
    edge: EdgeClient,
    worker: str,
    pool: str,
    crews: list[dict[str, Any]],
    stop: threading.Event,
    *,
    every_seconds: float = 10.0,
) -> bool:
    """Publish the pool's crews (`CrewSpec.public()` dicts) to the edge, again and again
    until it takes them (the edge may start after the worker, or be away for a while).
    False if stopped first."""
    warned = False
    while not stop.is_set():
        try:
            taken = edge.publish_crews(worker, pool, crews)
        except EdgeUnreachable as exc:
            if exc.refused:  # the same crews will be refused again: say why, and stop
                log.error("the edge refused pool %r's crews (%s); fix them and restart "
                          "this worker", pool, exc)  # fmt: skip
                return False
            if not warned:
                log.warning("the edge did not take pool %r's crews yet (%s); retrying", pool, exc)
                warned = True
            stop.wait(every_seconds)
            continue
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            if not warned:
                log.warning("the edge did not take pool %r's crews yet (%s); retrying", pool, exc)
                warned = True
            stop.wait(every_seconds)
            continue
        log.info("published %d crew(s) of pool %r to the edge: %s", len(taken), pool,
                 ", ".join(taken) or "none")  # fmt: skip
        return True
    return False


def publish_config(edge: EdgeClient, config: EdgecrewConfig, worker: str) -> list[str]:
    """Load and publish every crew of the config, whoever runs it (benchmarks and tools
    that need a catalog without starting a worker per pool)."""
    catalog = load_catalog(config)
    if catalog.errors:
        raise CrewLoadError(catalog.errors[0].entry, "; ".join(map(str, catalog.errors)))
    taken: list[str] = []
    for pool in config.pools:
        crews = [c.spec.public() for c in catalog.crews.values() if c.spec.pool == pool]
        taken += edge.publish_crews(worker, pool, crews)
    return taken


def describe(pool: str | None, config_path: Path | None) -> dict[str, Any]:
    """What `python -m executor.catalog` reports: the config file, each crew that loaded
    (its kind and published entry) and every error, as JSON-able data."""
    config = load_config(config_path)
    catalog = load_catalog(config, pool)
    return {
        "config": str(config.path) if config.path else None,
        "crews": [
            {"kind": loaded.kind, "spec": loaded.spec.public()} for loaded in catalog.crews.values()
        ],
        "errors": [str(error) for error in catalog.errors] + check_runtime(),
    }


def main() -> None:
    """Load a pool's crews in a process of its own and write what was found to a file.

    The worker asks this instead of loading crews itself: loading imports CrewAI and the
    crews' code (~110 MiB), which the worker's own long-lived process does not need (its
    flow runs are forked from a server that has them). The result goes to a file because
    crews may print to stdout while they are built.
    """
    parser = argparse.ArgumentParser(prog="python -m executor.catalog")
    parser.add_argument("--pool")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    try:
        found = describe(args.pool, args.config)
    except ConfigError as exc:
        found = {"config": None, "crews": [], "errors": [str(exc)]}
    args.output.write_text(json.dumps(found))


if __name__ == "__main__":
    main()
