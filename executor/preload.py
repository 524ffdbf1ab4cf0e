"""What the warm fork server imports once, so flow-run processes start with it done.

Importing this module is its whole job (see `executor.warm`): Prefect's engine, CrewAI,
the flow, the modules of the configured crews and, when set, the LLM factory module that
tests inject. Crews are imported, not built: nothing here may start a thread or open a
connection, since the server forks after it and a forked thread or socket would be
shared by every run.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import crewai  # noqa: F401 - the ~4 s import every run would otherwise pay
import prefect.engine
import prefect.flow_engine  # noqa: F401
import pydantic
from prefect import Flow

from executor.config import import_path, load_config
from executor.flows import run_crew_job
from executor.ingest import ingest_documents

#: Deployment entrypoints (as in prefect.yaml and prefect-ingest.yaml) whose flow is
#: already imported here.
FLOWS: dict[str, Flow[..., Any]] = {
    "executor/flows.py:run_crew_job": run_crew_job,
    "executor/ingest.py:ingest_documents": ingest_documents,
}


def _warm_imports() -> None:
    for entry in load_config().crews.values():
        if not entry.is_json:
            with import_path(entry):
                importlib.import_module(entry.source.partition(":")[0])
    factory = os.environ.get("EDGECREW_CREW_LLM_FACTORY")
    if factory:
        importlib.import_module(factory.partition(":")[0])


def _complete_prefect_models() -> None:
    """Build the pydantic models Prefect leaves to be built on first use.

    Some 250 of Prefect's models (the flow run, the deployment, state updates, event
    filters...) hold forward references that pydantic resolves the first time one is
    validated. In a forked run that first time is every time: ~0.2 s of its start here,
    before `RUNNING`. Built once in the fork server (~0.7 s), they are inherited done.
    A model that cannot be built yet is left to build itself as before.
    """
    for model in _subclasses(pydantic.BaseModel):
        if model.__module__.startswith("prefect.") and not model.__pydantic_complete__:
            with contextlib.suppress(Exception):
                model.model_rebuild()


def _subclasses(cls: type[pydantic.BaseModel]) -> Iterator[type[pydantic.BaseModel]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


_complete_prefect_models()

# The fork server survives an ImportError here but dies of anything else (a crew module
# that raises, a bad edgecrew.toml): warming is an optimisation, so a failure is reported
# and left to the run that needs it, where it fails that run with the error.
try:
    _warm_imports()
except Exception as _error:
    print(f"edgecrew preload: not warmed ({type(_error).__name__}: {_error})", file=sys.stderr)
