"""What one job's run may see: its job and tenant, its default LLM, its own directory.

Everything here is scoped to the run by a `ContextVar` or undone on exit, never left in a
module global: the knowledge tool finds the tenant of the job *being run*, not of the
last one, even when runs share a process (the tests run crews in-process; a worker forks
one process per run). CrewAI copies the context into the threads it starts (flow steps,
event handlers), so the values follow the run there too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Files a run writes are listed in its result; small text files are included whole.
MAX_TEXT_FILE_BYTES = 64 * 1024
MAX_TEXT_TOTAL_BYTES = 256 * 1024
MAX_LISTED_FILES = 100
#: CrewAI's own storage (memory, knowledge) for the run, inside its directory and not
#: listed: a crew's memory must never carry one tenant's data into another's job.
STORAGE_DIR = ".crewai"


@dataclass(frozen=True)
class JobContext:
    job_id: str
    tenant: str
    #: The tenant's knowledge-base search: (query, top_k) → matches.
    search: Callable[[str, int], list[dict[str, Any]]] = field(repr=False)


_job: ContextVar[JobContext | None] = ContextVar("edgecrew_job", default=None)
_default_llm: ContextVar[Callable[[], Any] | None] = ContextVar("edgecrew_llm", default=None)


class NotInAJob(RuntimeError):
    """An edgecrew tool was used outside a job edgecrew runs."""


def current_job() -> JobContext:
    job = _job.get()
    if job is None:
        raise NotInAJob("this tool works only inside a job that edgecrew runs")
    return job


@contextmanager
def running_job(job: JobContext, llm: Callable[[], Any]) -> Iterator[None]:
    """Within the block, tools see `job` and agents that name no LLM get `llm()`."""
    _install_default_llm_hook()
    job_token = _job.set(job)
    llm_token = _default_llm.set(llm)
    try:
        yield
    finally:
        _default_llm.reset(llm_token)
        _job.reset(job_token)


def _install_default_llm_hook() -> None:
    """Give agents that name no LLM the executor's, while a job runs.

    CrewAI builds such an agent's LLM in one place, `_llm_via_environment_or_fallback`
    (from MODEL / OPENAI_* variables, else its default OpenAI model). Environment
    variables cannot carry an LLM object (a custom `BaseLLM`, max_tokens, temperature),
    and OPENAI_BASE_URL would also redirect agents that named their own OpenAI model, so
    that function is wrapped instead: inside `running_job` it returns ours, outside it
    CrewAI's own. `executor.catalog` checks at start that the function still exists.
    """
    from crewai.utilities import llm_utils

    original = llm_utils._llm_via_environment_or_fallback
    if getattr(original, "edgecrew_hook", False):
        return

    def default_llm() -> Any:
        factory = _default_llm.get()
        return factory() if factory is not None else original()

    default_llm.edgecrew_hook = True  # type: ignore[attr-defined]
    llm_utils._llm_via_environment_or_fallback = default_llm


def default_llm_hook_available() -> bool:
    from crewai.utilities import llm_utils

    return callable(getattr(llm_utils, "_llm_via_environment_or_fallback", None))


@dataclass
class RunFiles:
    """The files a run left in its directory, as its result lists them."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False  # more files than MAX_LISTED_FILES (or some unreadable)


@contextmanager
def run_directory(job_id: str, project_root: Path | None = None) -> Iterator[RunFiles]:
    """Run in a fresh directory of our own: two jobs of one crew that both write
    `report.md` never meet. CrewAI's storage goes there too; all of it is removed after,
    once the files are listed in `RunFiles`. A project's `knowledge/` folder (where
    CrewAI looks for knowledge files, relative to the working directory) is linked in."""
    folder = Path(tempfile.mkdtemp(prefix=f"edgecrew-{job_id[:40]}-"))
    previous_cwd = Path.cwd()
    previous_storage = os.environ.get("CREWAI_STORAGE_DIR")
    storage = folder / STORAGE_DIR
    os.environ["CREWAI_STORAGE_DIR"] = str(storage)
    restore = _point_crewai_storage_at(storage)
    if project_root is not None and (project_root / "knowledge").is_dir():
        (folder / "knowledge").symlink_to(project_root / "knowledge", target_is_directory=True)
    os.chdir(folder)
    files = RunFiles()
    try:
        yield files
        files.entries = list_files(folder)
        files.truncated = len(_files_under(folder)) > len(files.entries)
    finally:
        os.chdir(previous_cwd)
        restore()
        if previous_storage is None:
            os.environ.pop("CREWAI_STORAGE_DIR", None)
        else:
            os.environ["CREWAI_STORAGE_DIR"] = previous_storage
        shutil.rmtree(folder, ignore_errors=True)


#: CrewAI modules that fix a storage path when they are imported, which happens in the
#: worker's fork server, before any run: CREWAI_STORAGE_DIR alone would leave their data
#: (a crew's knowledge, in collections named alike for every crew) shared by all runs.
_IMPORT_TIME_STORAGE = {
    "crewai.rag.chromadb.config": ("DEFAULT_STORAGE_PATH", ""),
    "crewai.rag.qdrant.config": ("DEFAULT_STORAGE_PATH", "qdrant"),
}


def _point_crewai_storage_at(storage: Path) -> Callable[[], None]:
    """Point the import-time paths of CrewAI's stores already imported at `storage` (a
    module imported later reads CREWAI_STORAGE_DIR itself); returns the undo."""
    saved: list[tuple[Any, str, Any]] = []
    for module_name, (attribute, below) in _IMPORT_TIME_STORAGE.items():
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            saved.append((module, attribute, getattr(module, attribute)))
            setattr(module, attribute, str(storage / below) if below else str(storage))

    def restore() -> None:
        for module, attribute, value in saved:
            setattr(module, attribute, value)

    return restore


def list_files(folder: Path) -> list[dict[str, Any]]:
    """`{name, size}` for each file (its path under the folder), with `text` for small
    UTF-8 files while the total stays under MAX_TEXT_TOTAL_BYTES. Links are not
    followed (nor listed): a run's result holds only what it wrote in its directory."""
    entries: list[dict[str, Any]] = []
    budget = MAX_TEXT_TOTAL_BYTES
    for path in _files_under(folder):
        if len(entries) == MAX_LISTED_FILES:
            break
        try:
            size = path.stat(follow_symlinks=False).st_size
            entry: dict[str, Any] = {"name": path.relative_to(folder).as_posix(), "size": size}
            if size <= min(MAX_TEXT_FILE_BYTES, budget):
                entry["text"] = path.read_text(encoding="utf-8")
                budget -= size
        except UnicodeDecodeError:
            pass  # binary: listed, not included
        except OSError:
            continue  # removed meanwhile, or unreadable: not the job's failure
        entries.append(entry)
    return entries


def restore_files(folder: Path, entries: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> None:
    """Write back the files an earlier run of the job left (`list_files` entries with
    their text; a binary or large file, listed without it, cannot come back). Names stay
    inside `folder`, whatever an entry says."""
    for entry in entries:
        name, text = entry.get("name"), entry.get("text")
        if not isinstance(name, str) or not isinstance(text, str):
            continue
        path = Path(name)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            continue
        target = folder / path
        # `..` is not the only way out: a symlink the crew left in the folder is another.
        if not target.resolve().is_relative_to(folder.resolve()):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _files_under(folder: Path) -> list[Path]:
    found = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        if Path(root) == folder and STORAGE_DIR in dirs:
            dirs.remove(STORAGE_DIR)
        found += [Path(root) / n for n in names if not (Path(root) / n).is_symlink()]
    return sorted(found)
