from crewai import Agent, Crew, Process, Task
from crewai.agents.agent_builder.base_agent import BaseAgent
from crewai.project import CrewBase, agent, crew, task

from executor.tools import KnowledgeSearchTool


@CrewBase
class ResearchCrew:
    """A researcher searches the tenant's knowledge base about a topic, then a writer
    turns the findings into a short cited report (also written to report.md)."""

    agents: list[BaseAgent]
    tasks: list[Task]

    @agent
    def researcher(self) -> Agent:
        return Agent(
            config=self.agents_config["researcher"],  # type: ignore[index]
            tools=[KnowledgeSearchTool()],
            allow_delegation=False,
            max_iter=4,
        )

    @agent
    def writer(self) -> Agent:
        return Agent(
            config=self.agents_config["writer"],  # type: ignore[index]
            allow_delegation=False,
            max_iter=4,
        )

    @task
    def research_task(self) -> Task:
        return Task(config=self.tasks_config["research_task"])  # type: ignore[index]

    @task
    def report_task(self) -> Task:
        return Task(
            config=self.tasks_config["report_task"],  # type: ignore[index]
            output_file="report.md",
        )

    @crew
    def crew(self) -> Crew:
        """Creates the research crew"""
        return Crew(agents=self.agents, tasks=self.tasks, process=Process.sequential)
