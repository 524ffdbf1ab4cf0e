"""Crews as data: one folder each with `config/{crew,agents,tasks}.yaml` and `crew.py`.

`crew.yaml` declares the crew's inputs (JSON Schema), defaults and work pool; agents and
tasks are prompts; `crew.py` maps agents to tools by name from the toolbox the flow builds
(for now `knowledge_search`). The LLM is injected, so tests pass a recording fake.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

CREWS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class CrewDefinition:
    name: str
    description: str
    pool: str
    inputs: dict[str, Any]
    defaults: dict[str, Any]
    agents: dict[str, dict[str, Any]]
    tasks: dict[str, dict[str, Any]]
    agent_tools: Mapping[str, tuple[str, ...]]

    def task_names(self) -> list[str]:
        return list(self.tasks)


@cache
def load_crew(name: str) -> CrewDefinition:
    """Read a crew's YAML files; KeyError for a crew that does not exist."""
    folder = CREWS_DIR / name / "config"
    if not (folder / "crew.yaml").is_file():
        raise KeyError(f"no crew {name!r} in {CREWS_DIR}")
    meta = _yaml(folder / "crew.yaml")
    return CrewDefinition(
        name=meta["name"],
        description=" ".join(str(meta["description"]).split()),
        pool=meta["pool"],
        inputs=meta["inputs"],
        defaults=meta.get("defaults") or {},
        agents=_yaml(folder / "agents.yaml"),
        tasks=_yaml(folder / "tasks.yaml"),
        agent_tools=importlib.import_module(f"{__name__}.{name}.crew").AGENT_TOOLS,
    )


def crew_names() -> list[str]:
    return sorted(p.parent.parent.name for p in CREWS_DIR.glob("*/config/crew.yaml"))


def build_crew(
    definition: CrewDefinition,
    *,
    llm: Any,
    tools: Mapping[str, Any],
    task_callback: Callable[[Any], None] | None = None,
) -> Any:
    """A CrewAI Crew from a definition; CrewAI is imported here, not at module import."""
    from crewai import Agent, Crew, Process, Task

    agents = {
        name: Agent(
            **spec,
            llm=llm,
            tools=[tools[t] for t in definition.agent_tools.get(name, ())],
            allow_delegation=False,
            verbose=False,
            max_iter=4,
        )
        for name, spec in definition.agents.items()
    }
    tasks = [
        Task(
            name=name,
            description=spec["description"],
            expected_output=spec["expected_output"],
            agent=agents[spec["agent"]],
        )
        for name, spec in definition.tasks.items()
    ]
    with warnings.catch_warnings():
        # CrewAI warns that a callback object cannot be serialized for its checkpoints;
        # we do not use checkpoints (a Prefect retry re-runs the crew from the start).
        warnings.filterwarnings("ignore", message=".*cannot be serialized", category=UserWarning)
        return Crew(
            agents=list(agents.values()),
            tasks=tasks,
            process=Process.sequential,
            task_callback=task_callback,
            verbose=False,
        )


def _yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping")
    return loaded
