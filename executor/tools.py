"""Tools the crews' agents may use."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from executor.edge_client import EdgeClient


class _SearchArgs(BaseModel):
    query: str = Field(description="What to look for in the knowledge base")


def knowledge_search_tool(edge: EdgeClient, tenant: str) -> Any:
    """A CrewAI tool that searches this tenant's knowledge base through the edge."""
    from crewai.tools import BaseTool

    class KnowledgeSearch(BaseTool):  # type: ignore[misc]
        name: str = "knowledge_search"
        description: str = (
            "Search the knowledge base. Returns the best matching passages, each starting "
            "with its chunk id in square brackets."
        )
        args_schema: type[BaseModel] = _SearchArgs

        def _run(self, query: str) -> str:
            matches = edge.search(tenant, query, top_k=4)
            if not matches:
                return "No passages found."
            return "\n\n".join(f"[{m['chunk_id']}] {m['text']}" for m in matches)

    return KnowledgeSearch()
