"""Tools edgecrew gives crews: give them to your agents like any CrewAI tool.

    from executor.tools import KnowledgeSearchTool

    @agent
    def researcher(self) -> Agent:
        return Agent(config=self.agents_config["researcher"], tools=[KnowledgeSearchTool()])

In a JSON-first project, name it in the agent's tools: `"executor.tools:KnowledgeSearchTool"`.
The tool searches the knowledge base of the tenant whose job is running (see
`executor.run_context`); a crew cannot choose another tenant.
"""

from __future__ import annotations

from crewai.tools import BaseTool
from pydantic import BaseModel, Field

from executor.run_context import current_job

TOP_K = 4


class _SearchArgs(BaseModel):
    query: str = Field(description="What to look for in the knowledge base")


class KnowledgeSearchTool(BaseTool):
    name: str = "knowledge_search"
    description: str = (
        "Search the knowledge base. Returns the best matching passages, each starting "
        "with its chunk id in square brackets."
    )
    args_schema: type[BaseModel] = _SearchArgs

    def _run(self, query: str) -> str:
        matches = current_job().search(query, TOP_K)
        if not matches:
            return "No passages found."
        return "\n\n".join(f"[{m['chunk_id']}] {m['text']}" for m in matches)
