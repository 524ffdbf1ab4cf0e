"""The crew LLM: any OpenAI-compatible server by default, Workers AI
(`EDGECREW_CREW_LLM_PROVIDER=workers-ai`), or a factory named in settings.

`EDGECREW_CREW_LLM_FACTORY=package.module:callable` swaps in another LLM (tests use a
recording fake this way, since flows run in worker subprocesses).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from executor.settings import ExecutorSettings


def build_llm(settings: ExecutorSettings) -> Any:
    factory = os.environ.get("EDGECREW_CREW_LLM_FACTORY")
    if factory:
        module_name, _, attribute = factory.partition(":")
        return getattr(importlib.import_module(module_name), attribute)()
    if settings.llm_provider == "workers-ai":
        from executor.workers_ai import workers_ai_llm

        return workers_ai_llm(settings)
    from crewai import LLM

    # "openai/<model>" makes CrewAI speak the OpenAI chat API to base_url (llama.cpp, vLLM,
    # Workers AI's OpenAI-compatible endpoint).
    return LLM(
        model=f"openai/{settings.llm_model}",
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key,
        max_tokens=settings.llm_max_tokens,
        temperature=0.2,
    )
