"""The two crews the repo ships, as their workers would publish them, for edge tests.

The edge learns crews only from the catalog; tests that submit jobs seed it with these
(`await publish_shipped_crews(kv)`), the same way a worker's publish would.
"""

from __future__ import annotations

from edge.jobs import catalog
from edge.ports import KeyValueStore
from shared.crews import CrewSpec

PUBLISHED_AT = 1_800_000_000.0
TEST_WORKER = "test-worker"

RESEARCH = CrewSpec(
    name="research",
    description=(
        "A researcher searches the tenant's knowledge base about a topic, then a writer "
        "turns the findings into a short cited report."
    ),
    pool="gpu",
    inputs={
        "type": "object",
        "properties": {
            "topic": {"type": "string", "minLength": 1, "maxLength": 500},
            "audience": {"type": "string", "maxLength": 200},
        },
        "required": ["topic"],
        "additionalProperties": False,
    },
    tasks=("research_task", "report_task"),
    version="0.1.0+research0001",
)
SUMMARIZE = CrewSpec(
    name="summarize",
    description="One agent summarizes the given text in a few sentences.",
    pool="cpu",
    inputs={
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": 20000},
            "sentences": {"type": "integer", "minimum": 1, "maximum": 10},
        },
        "required": ["text"],
        "additionalProperties": False,
    },
    tasks=("summarize_task",),
    version="0.1.0+summarize001",
)
SHIPPED_CREWS = (RESEARCH, SUMMARIZE)


async def publish_shipped_crews(kv: KeyValueStore, now: float = PUBLISHED_AT) -> list[str]:
    """Put the shipped crews into `kv`'s catalog, as a worker's publish would."""
    return await catalog.publish(kv, TEST_WORKER, SHIPPED_CREWS, now)
