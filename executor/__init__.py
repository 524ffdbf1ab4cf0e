"""The executor: Prefect flows that run CrewAI crews (built in the jobs milestone)."""
