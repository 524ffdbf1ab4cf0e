"""What the warm fork server imports once, so flow-run processes start with it done.

Importing this module is its whole job (see `executor.warm`): Prefect's engine, CrewAI,
the flow, every crew's definition (cached by `load_crew`) and, when set, the LLM factory
module that tests inject. Nothing here may start a thread or open a connection: the
server forks after it, and a forked thread or socket would be shared by every run.
"""

from __future__ import annotations

import importlib
import os
import sys

import crewai  # noqa: F401 - the ~4 s import every run would otherwise pay
import prefect.engine
import prefect.flow_engine  # noqa: F401

from executor.crews import crew_names, load_crew
from executor.flows import run_crew_job

#: Deployment entrypoints (as in prefect.yaml) whose flow is already imported here.
FLOWS = {"executor/flows.py:run_crew_job": run_crew_job}


def _warm_caches() -> None:
    for name in crew_names():
        load_crew(name)
    factory = os.environ.get("EDGECREW_CREW_LLM_FACTORY")
    if factory:
        importlib.import_module(factory.partition(":")[0])


# The fork server survives an ImportError here but dies of anything else (a crew's bad
# YAML, a factory module that raises): warming is an optimisation, so a failure is
# reported and left to the run that needs it, where it fails that run with the error.
try:
    _warm_caches()
except Exception as _error:
    print(f"edgecrew preload: not warmed ({type(_error).__name__}: {_error})", file=sys.stderr)
