"""The real local LLM server for tests: started once per session, as `edgecrew dev` starts it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.local.llm_service import START_TIMEOUT_S, local_llm_service
from edge.local.processes import Supervisor, free_port


@dataclass(frozen=True)
class LocalLLM:
    base_url: str  # ends in /v1, as clients are configured
    log: Path  # the server's log, for what only it can tell (a cancelled generation)

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@contextmanager
def running_local_llm(workdir: Path) -> Iterator[LocalLLM]:
    """The server on a free port; its model comes from EDGECREW_LLM_CACHE_DIR when set."""
    port = free_port()
    supervisor = Supervisor(workdir / "logs")
    service = local_llm_service(port, workdir / "data")
    supervisor.start(service, timeout=START_TIMEOUT_S)
    try:
        yield LocalLLM(f"http://127.0.0.1:{port}/v1", supervisor.log_path(service))
    finally:
        supervisor.stop_all()
