#!/usr/bin/env python
"""Run the crew without edgecrew, as `crewai run` does (edgecrew runs the same class)."""

from research.crew import ResearchCrew


def run() -> None:
    inputs = {"topic": "the staging database", "audience": "a general audience"}
    ResearchCrew().crew().kickoff(inputs=inputs)


if __name__ == "__main__":
    run()
