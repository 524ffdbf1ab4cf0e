"""CrewAI projects made the way their users make them: by CrewAI's own CLI, offline.

`crewai create crew --classic`, `crewai create flow` and, for the JSON-first kind, the
CLI's non-interactive mode (`CREWAI_DMN=1`, what CrewAI's own deployment runs; the
interactive one prompts for every agent and task). Nothing is edited unless a test says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CREWAI_CLI = Path(sys.executable).with_name("crewai")


@dataclass(frozen=True)
class Projects:
    root: Path

    @property
    def classic(self) -> Path:
        return self.root / "classic_crew"

    @property
    def flow(self) -> Path:
        return self.root / "content_flow"

    @property
    def json_crew(self) -> Path:
        return self.root / "json_crew"


def create_projects(root: Path) -> Projects:
    """The three kinds of project, under `root`."""
    env = {**os.environ, "CREWAI_DISABLE_TELEMETRY": "true", "OTEL_SDK_DISABLED": "true"}
    commands = [
        ["crew", "--classic", "--skip-provider", "classic_crew"],
        ["flow", "--skip-provider", "content_flow"],
    ]
    for args in commands:
        _create(root, args, env)
    _create(root, ["crew", "--skip-provider", "json_crew"], {**env, "CREWAI_DMN": "1"})
    return Projects(root)


def _create(root: Path, args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        [str(CREWAI_CLI), "create", *args], cwd=root, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"crewai create {' '.join(args)}:\n{done.stdout}{done.stderr}"


def toml_for(projects: Projects, *, extra: str = "") -> str:
    """An edgecrew.toml registering the three projects, as docs/crews.md says to."""
    return f"""
[crews.classic]
source = "classic_crew.crew:ClassicCrew"
path = "{projects.classic / "src"}"
pool = "cpu"

[crews.content]
source = "content_flow.main:ContentFlow"
path = "{projects.flow / "src"}"
pool = "cpu"

[crews.scaffold]
source = "{projects.json_crew / "crew.jsonc"}"
pool = "cpu"
llm = "executor"   # its agent names openai/gpt-4o; run it on the executor's LLM
{extra}
"""
