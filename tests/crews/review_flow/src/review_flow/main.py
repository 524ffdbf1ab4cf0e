#!/usr/bin/env python
"""A flow laid out as `crewai create flow` lays one out, whose draft a person reviews:
CrewAI's own `@human_feedback`, routed on the reviewer's verdict (`emit`), then a plain
question whose answer the flow keeps. Run by `crewai run` it asks on the terminal."""

from crewai import Agent
from crewai.flow import Flow, human_feedback, listen, or_, start
from crewai.flow.persistence import persist
from pydantic import BaseModel


class ReviewState(BaseModel):
    topic: str = "tides"
    notes: str = ""
    drafts: int = 0
    published: str = ""
    last_words: str = ""
    reviews: int = 0


def research_notes(topic: str) -> str:
    researcher = Agent(
        role="Researcher", goal=f"Research {topic}",
        backstory="You find the facts a short post needs.",
    )  # fmt: skip
    return researcher.kickoff(f"Research notes on {topic}").raw


class ReviewFlow(Flow[ReviewState]):
    """Research a topic, draft a post a person approves or sends back, then publish it."""

    @start()
    def research(self) -> str:
        self.state.notes = research_notes(self.state.topic)
        return self.state.notes

    @listen(or_(research, "rejected"))
    @human_feedback(
        message="Approve the draft, or say what to change.",
        emit=["approved", "rejected"],
        default_outcome="approved",
    )
    def write_draft(self) -> str:
        self.state.drafts += 1
        asked = self.last_human_feedback.feedback if self.last_human_feedback else ""
        return f"Draft {self.state.drafts} on {self.state.topic}. {asked}".strip()

    @listen("approved")
    def publish(self) -> str:
        self.state.published = str(self.last_human_feedback.output)
        return self.state.published

    @listen(publish)
    @human_feedback(message="Anything to add below the post?")
    def sign_off(self) -> str:
        return f"Published: {self.state.published}"

    @listen(sign_off)
    def wrap_up(self) -> str:
        self.state.last_words = self.last_human_feedback.feedback
        self.state.reviews = len(self.human_feedback_history)
        return f"{self.state.published} | {self.state.last_words}"


@persist()
class PersistedReviewFlow(Flow[ReviewState]):
    """A shorter review, its state saved after each step (CrewAI's `@persist`)."""

    @start()
    def research(self) -> str:
        self.state.notes = research_notes(self.state.topic)
        return self.state.notes

    @listen(research)
    @human_feedback(
        message="Approve the draft, or say what to change.",
        emit=["approved", "rejected"],
        default_outcome="approved",
    )
    def write_draft(self) -> str:
        self.state.drafts += 1
        return f"Draft {self.state.drafts} on {self.state.topic}."

    @listen("approved")
    def publish(self) -> str:
        self.state.published = str(self.last_human_feedback.output)
        self.state.reviews = len(self.human_feedback_history)
        return self.state.published


class NoteFlow(Flow[ReviewState]):
    """One step, no question."""

    @start()
    def note(self) -> str:
        self.state.notes = f"noted {self.state.topic}"
        return self.state.notes


def kickoff() -> None:
    ReviewFlow().kickoff()


if __name__ == "__main__":
    kickoff()
