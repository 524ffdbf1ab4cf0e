"""The research crew: a researcher with the knowledge-base search tool, then a writer.

Prompts live in config/; this file says what only code can: which agent gets which tool.
"""

AGENT_TOOLS = {"researcher": ("knowledge_search",)}
