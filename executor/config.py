"""`edgecrew.toml`: which crews a worker offers, and on which work pools.

    [crews.research]
    source = "research.crew:ResearchCrew"   # a @CrewBase class, a Flow class,
    path = "examples/crews/research/src"    # ... or "path/to/crew.jsonc"
    pool = "gpu"

    [pools.gpu]
    concurrency = 2

The file is the working directory's `edgecrew.toml`, or the one `EDGECREW_CONFIG` names.
Installed packages add crews through the `edgecrew.crews` entry-point group (`name =
"module:attribute"`); a `[crews.<name>]` table of the same name sets their pool and the
rest. Relative paths are relative to the file, not to wherever a process happens to run.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from shared.crews import NAME_PATTERN, POOL_PATTERN, schema_errors
from shared.documents import INGESTION_POOL

CONFIG_FILE = "edgecrew.toml"
ENTRY_POINT_GROUP = "edgecrew.crews"
DEFAULT_POOL = "cpu"
DEFAULT_CONCURRENCY = 4
LLM_CHOICES = ("own", "executor")
_CREW_KEYS = {
    "source", "path", "pool", "description", "inputs", "defaults", "llm", "input_timeout_seconds",
}  # fmt: skip


class ConfigError(ValueError):
    """edgecrew.toml (or an entry point) is wrong; the message names the file and key."""


@dataclass(frozen=True)
class CrewEntry:
    name: str
    source: str  # "module:attribute" or a path to a crew.jsonc (absolute once loaded)
    pool: str
    description: str | None = None
    inputs: Mapping[str, Any] | None = None  # overrides the derived schema
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: "own": agents that name an LLM keep it; "executor": every agent of the crew runs
    #: on the executor's LLM (for a scaffold that names a cloud model, run offline).
    llm: str = "own"
    path: Path | None = None  # prepended to sys.path while the crew loads
    origin: str = CONFIG_FILE  # where the entry came from, for messages
    #: How long a job of this crew may wait for a person's answer before it fails with
    #: `InputTimeout`; None: the executor's EDGECREW_INPUT_TIMEOUT_SECONDS.
    input_timeout_seconds: int | None = None

    @property
    def is_json(self) -> bool:
        return self.source.endswith((".json", ".jsonc"))


@dataclass(frozen=True)
class EdgecrewConfig:
    crews: Mapping[str, CrewEntry]
    concurrency: Mapping[str, int]  # per pool; DEFAULT_CONCURRENCY where unset
    path: Path | None = None  # the file read, if any

    @property
    def pools(self) -> list[str]:
        """The pools of the crews and of `[pools.*]`, and the bulk ingestions' (cpu)."""
        crews = {entry.pool for entry in self.crews.values()}
        return sorted(crews | set(self.concurrency) | {INGESTION_POOL})

    def concurrency_of(self, pool: str) -> int:
        return self.concurrency.get(pool, DEFAULT_CONCURRENCY)

    def pool_limits(self) -> dict[str, int]:
        """Each pool → its deployment's concurrency limit."""
        return {pool: self.concurrency_of(pool) for pool in self.pools}

    def in_pool(self, pool: str) -> list[CrewEntry]:
        return [entry for name, entry in sorted(self.crews.items()) if entry.pool == pool]


def config_path(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path | None:
    """The file `EDGECREW_CONFIG` names (it must exist), else `./edgecrew.toml` if present."""
    env = os.environ if env is None else env
    if named := env.get("EDGECREW_CONFIG"):
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"EDGECREW_CONFIG names {path}, which is not a file")
        return path.resolve()
    default = (cwd or Path.cwd()) / CONFIG_FILE
    return default.resolve() if default.is_file() else None


def load_config(
    path: Path | None = None, *, env: Mapping[str, str] | None = None, plugins: bool = True
) -> EdgecrewConfig:
    """Read the config file (see `config_path`) and the installed entry points."""
    path = path.resolve() if path is not None else config_path(env)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    origin = str(path) if path else CONFIG_FILE
    base = path.parent if path else Path.cwd()
    tables = _table(data, "crews", origin)
    pools = _pools(_table(data, "pools", origin), origin)
    default_pool = _table(data, "defaults", origin).get("pool", DEFAULT_POOL)
    crews: dict[str, CrewEntry] = {}
    if plugins:
        for name, source in _entry_point_sources().items():
            table = tables.get(name, {})
            crews[name] = _entry(name, {"pool": default_pool, "source": source, **table},
                                 f"entry point {name!r}", base)  # fmt: skip
    for name, table in tables.items():
        if name not in crews:
            crews[name] = _entry(name, {"pool": default_pool, **table}, origin, base)
    return EdgecrewConfig(crews=crews, concurrency=pools, path=path)


@contextmanager
def import_path(entry: CrewEntry) -> Iterator[None]:
    """The entry's `path` on sys.path while its code is imported (and left there after:
    a crew's modules import each other lazily, at run time, too)."""
    if entry.path is not None and str(entry.path) not in sys.path:
        sys.path.insert(0, str(entry.path))
    yield


def _entry(name: str, table: Mapping[str, Any], origin: str, base: Path) -> CrewEntry:
    where = f"{origin}: crews.{name}"
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: a crew name must match {NAME_PATTERN.pattern}")
    if unknown := sorted(set(table) - _CREW_KEYS):
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)}")
    source = table.get("source")
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{where}: source is required ('module:Class' or a crew.jsonc path)")
    pool = table.get("pool")
    if not isinstance(pool, str) or not POOL_PATTERN.match(pool):
        raise ConfigError(f"{where}: pool must match {POOL_PATTERN.pattern}")
    llm = table.get("llm", "own")
    if llm not in LLM_CHOICES:
        raise ConfigError(f"{where}: llm must be one of {', '.join(LLM_CHOICES)}")
    inputs = table.get("inputs")
    if inputs is not None and (problems := schema_errors(inputs)):
        raise ConfigError(f"{where}: inputs: {'; '.join(problems)}")
    defaults = table.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{where}: defaults must be a table")
    description = table.get("description")
    if description is not None and not isinstance(description, str):
        raise ConfigError(f"{where}: description must be a string")
    if source.endswith((".json", ".jsonc")):
        source = str((base / source).resolve())
    elif ":" not in source:
        raise ConfigError(f"{where}: source {source!r} is neither 'module:Class' nor a .jsonc")
    path = table.get("path")
    if path is not None and not isinstance(path, str):
        raise ConfigError(f"{where}: path must be a string")
    timeout = table.get("input_timeout_seconds")
    if timeout is not None and (
        not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1
    ):
        raise ConfigError(f"{where}: input_timeout_seconds must be a positive integer")
    return CrewEntry(
        name=name,
        source=source,
        pool=pool,
        description=description,
        inputs=inputs,
        defaults=defaults,
        llm=llm,
        path=(base / path).resolve() if path else None,
        origin=origin,
        input_timeout_seconds=timeout,
    )


def _entry_point_sources() -> dict[str, str]:
    """`edgecrew.crews` entry points: name → "module:attribute" (not imported here)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _table(data: Mapping[str, Any], key: str, origin: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: [{key}] must be a table")
    return value


def _pools(tables: Mapping[str, Any], origin: str) -> dict[str, int]:
    pools = {}
    for pool, table in tables.items():
        if not POOL_PATTERN.match(pool) or not isinstance(table, dict):
            raise ConfigError(f"{origin}: pools.{pool} must be a table named like a pool")
        concurrency = table.get("concurrency", DEFAULT_CONCURRENCY)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ConfigError(f"{origin}: pools.{pool}.concurrency must be a positive integer")
        pools[pool] = concurrency
    return pools
