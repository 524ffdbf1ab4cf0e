"""The summarize crew: one agent, no tools, prompts in config/."""

AGENT_TOOLS: dict[str, tuple[str, ...]] = {}
