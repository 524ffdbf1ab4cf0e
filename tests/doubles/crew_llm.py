"""A scripted CrewAI LLM that records its prompts.

With tools on offer and no observation yet, it asks for `knowledge_search`; otherwise it
gives a final answer that quotes the last observation, so a test can see the tool's
output flow through the crew. A prompt containing SLOW-CREW hangs (for kill tests), one
containing SLEEP-CREW takes 3 s per call (a crew still running when a fault hits); TAG-…
words of the prompt are repeated in the answer. Set
EDGECREW_FAKE_LLM_LOG to append each call to a JSONL
file (flows run in worker subprocesses, where the test cannot see memory).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from crewai.llms.base_llm import BaseLLM
from pydantic import Field


class ScriptedLLM(BaseLLM):
    model: str = "scripted-fake"
    calls: list[str] = Field(default_factory=list)

    def call(self, messages: Any, tools: Any = None, callbacks: Any = None,
             available_functions: Any = None, from_task: Any = None, from_agent: Any = None,
             response_model: Any = None) -> str:  # fmt: skip
        text = (
            messages
            if isinstance(messages, str)
            else "\n".join(str(m.get("content", "")) for m in messages)
        )
        self.calls.append(text)
        if "SLOW-CREW" in text:  # lets a test kill a worker while a crew is mid-run
            time.sleep(600)
        if "SLEEP-CREW" in text:
            time.sleep(3)
        if path := os.environ.get("EDGECREW_FAKE_LLM_LOG"):
            with open(path, "a", encoding="utf-8") as log:
                log.write(json.dumps({"prompt": text}) + "\n")
        # The format instructions mention "Observation:" too; only look past "Begin!".
        conversation = text.split("Begin!", 1)[-1]
        if "knowledge_search" in text and "Observation:" not in conversation:
            return (
                "Thought: I should search the knowledge base.\n"
                "Action: knowledge_search\n"
                'Action Input: {"query": "edgecrew"}'
            )
        observation = ""
        if "Observation:" in conversation:
            observation = conversation.rsplit("Observation:", 1)[-1].strip()[:200]
        # TAG-… words of the prompt are echoed, so a test can tell two jobs' outputs apart.
        tags = " ".join(sorted(set(re.findall(r"TAG-\w+", text))))
        answer = " ".join(part for part in ("FAKE ANSWER.", tags, observation) if part)
        return f"Thought: I now know the final answer\nFinal Answer: {answer}"

    def supports_function_calling(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 8192


def scripted_llm() -> ScriptedLLM:
    """The factory EDGECREW_CREW_LLM_FACTORY names: tests.doubles.crew_llm:scripted_llm."""
    return ScriptedLLM(model="scripted-fake")
