"""The crew catalog: what the edge knows about crews without importing CrewAI.

Workers load their configured crews (`executor.catalog`), describe each one as a
`CrewSpec` and publish them to the edge (`POST /v1/internal/crews`, signed like the
callbacks); the edge keeps them in the key-value store and validates jobs against them.
Nothing here is written by hand per crew: this module is only the shape of an entry and
the input checks both sides share. Pyodide-safe: standard library only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FLOW_NAME = "run-crew-job"
#: The KV key of each published crew is this prefix and the crew's name.
CATALOG_PREFIX = "catalog:crew:"
CREW_KINDS = ("crew", "flow")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,47}$")
POOL_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,47}$")
#: The JSON Schema types an input may have; the edge checks values of these types.
INPUT_TYPES = ("string", "integer", "number", "boolean", "array", "object")
#: The schema keywords `input_errors` understands (anything else is refused at publish,
#: so a crew never advertises a rule that nobody enforces).
PROPERTY_KEYWORDS = frozenset(
    [
        "type",
        "description",
        "default",
        "title",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "enum",
        "pattern",
    ]
)
MAX_CREWS_PER_PUBLISH = 200
MAX_INPUTS = 100
MAX_SCHEMA_CHARS = 32_768
MAX_DESCRIPTION_CHARS = 2_000
MAX_TASKS = 100


class CatalogError(ValueError):
    """A published crew entry is malformed; the message says where."""


@dataclass(frozen=True, slots=True)
class CrewSpec:
    name: str
    description: str
    pool: str
    inputs: Mapping[str, Any]  # JSON Schema: an object of INPUT_TYPES properties
    kind: str = "crew"  # "crew" (tasks) or "flow" (steps)
    tasks: tuple[str, ...] = ()  # task names for a crew, step names for a flow
    version: str = ""  # "<package version>+<digest of the definition>"
    #: The Prefect flow its jobs run: every published crew runs `run-crew-job`; only the
    #: edge's own job kinds (the bulk ingestion) name another. Never published.
    flow: str = FLOW_NAME

    @property
    def deployment(self) -> str:
        """The Prefect deployment, `<flow>/<deployment>`: one per work pool."""
        return f"{self.flow}/{self.pool}"

    def public(self) -> dict[str, Any]:
        """The entry as `GET /v1/crews` lists it and as workers publish it."""
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "pool": self.pool,
            "inputs": dict(self.inputs),
            "tasks": list(self.tasks),
            "version": self.version,
        }

    @classmethod
    def from_public(cls, data: Any) -> CrewSpec:
        """Parse and check one published entry; CatalogError names what is wrong."""
        if not isinstance(data, dict):
            raise CatalogError("a crew entry must be an object")
        name = data.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise CatalogError(f"crew name {name!r} must match {NAME_PATTERN.pattern}")
        where = f"crew {name!r}"
        pool = data.get("pool")
        if not isinstance(pool, str) or not POOL_PATTERN.match(pool):
            raise CatalogError(f"{where}: pool {pool!r} must match {POOL_PATTERN.pattern}")
        kind = data.get("kind", "crew")
        if kind not in CREW_KINDS:
            raise CatalogError(f"{where}: kind must be one of {', '.join(CREW_KINDS)}")
        description = data.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
            limit = MAX_DESCRIPTION_CHARS
            raise CatalogError(f"{where}: description must be a string of at most {limit} chars")
        tasks = data.get("tasks", [])
        if (
            not isinstance(tasks, list)
            or len(tasks) > MAX_TASKS
            or not all(isinstance(t, str) and 0 < len(t) <= 200 for t in tasks)
        ):
            raise CatalogError(f"{where}: tasks must be a list of at most {MAX_TASKS} names")
        version = data.get("version", "")
        if not isinstance(version, str) or len(version) > 200:
            raise CatalogError(f"{where}: version must be a string of at most 200 characters")
        inputs = data.get("inputs")
        schema_problems = schema_errors(inputs)
        if schema_problems:
            raise CatalogError(f"{where}: inputs: {'; '.join(schema_problems)}")
        assert isinstance(inputs, dict)
        return cls(
            name=name,
            description=description,
            pool=pool,
            inputs=inputs,
            kind=kind,
            tasks=tuple(tasks),
            version=version,
        )


def definition_digest(definition: Any) -> str:
    """A short, stable digest of a crew's definition (any JSON-able value)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def schema_errors(schema: Any) -> list[str]:
    """What in an input schema `input_errors` could not enforce, or would trip over
    (empty when usable). Values are checked as well as keywords: a published schema is
    applied to every job of its crew, so a rule of the wrong type must be refused here
    rather than fail each job."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return ["must be a JSON Schema object with type 'object'"]
    if len(json.dumps(schema, default=str)) > MAX_SCHEMA_CHARS:
        return [f"must be at most {MAX_SCHEMA_CHARS} characters of JSON"]
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or len(properties) > MAX_INPUTS:
        return [f"properties must be an object of at most {MAX_INPUTS} inputs"]
    problems = []
    for name, rule in properties.items():
        if not isinstance(rule, dict):
            problems.append(f"{name}: must be an object")
            continue
        if unknown := sorted(set(rule) - PROPERTY_KEYWORDS):
            problems.append(f"{name}: unsupported keywords {', '.join(unknown)}")
        problems += [f"{name}: {problem}" for problem in _rule_errors(rule)]
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(
        isinstance(r, str) and r in properties for r in required
    ):
        problems.append("required must list properties of the schema")
    if not isinstance(schema.get("additionalProperties", False), bool):
        problems.append("additionalProperties must be true or false")
    return problems


def _rule_errors(rule: Mapping[str, Any]) -> list[str]:
    problems = []
    kinds = _kinds(rule.get("type"))
    if kinds is None:
        problems.append(f"type must be one of {', '.join(INPUT_TYPES)} (or a list of them)")
    for key in ("minLength", "maxLength"):
        if key in rule and not (_is_integer(rule[key]) and rule[key] >= 0):
            problems.append(f"{key} must be a whole number >= 0")
    for key in ("minimum", "maximum"):
        if key in rule and not _is_number(rule[key]):
            problems.append(f"{key} must be a number")
    if "enum" in rule and not (isinstance(rule["enum"], list) and rule["enum"]):
        problems.append("enum must be a non-empty list")
    if "pattern" in rule:
        pattern = rule["pattern"]
        try:
            valid = isinstance(pattern, str) and len(pattern) <= 500 and bool(re.compile(pattern))
        except re.error:
            valid = False
        if not valid:
            problems.append("pattern must be a regular expression of at most 500 characters")
    for key in ("title", "description"):
        if key in rule and not isinstance(rule[key], str):
            problems.append(f"{key} must be a string")
    return problems


def _kinds(kind: Any) -> tuple[str, ...] | None:
    """The types a rule allows: one of INPUT_TYPES, or a list of them and "null"."""
    if isinstance(kind, str):
        return (kind,) if kind in INPUT_TYPES else None
    allowed = (*INPUT_TYPES, "null")
    if isinstance(kind, list) and kind and all(isinstance(k, str) and k in allowed for k in kind):
        return tuple(kind)
    return None


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def input_errors(schema: Mapping[str, Any], inputs: Any) -> list[dict[str, Any]]:
    """Problems with `inputs` against the catalog's schema subset, as `{loc, msg}` items.

    Unknown inputs are refused unless the schema sets `additionalProperties: true`. The
    schema is one `schema_errors` accepted.
    """
    if not isinstance(inputs, dict):
        return [{"loc": ["inputs"], "msg": "must be an object"}]
    properties: Mapping[str, Any] = schema.get("properties", {})
    open_schema = schema.get("additionalProperties", False) is True
    errors = [
        {"loc": ["inputs", name], "msg": "is required"}
        for name in schema.get("required", [])
        if name not in inputs
    ]
    for name, value in inputs.items():
        rule = properties.get(name)
        if rule is None:
            if not open_schema:
                errors.append({"loc": ["inputs", name], "msg": "is not an input of this crew"})
        elif (message := _value_error(rule, value)) is not None:
            errors.append({"loc": ["inputs", name], "msg": message})
    return errors


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def _value_error(rule: Mapping[str, Any], value: Any) -> str | None:
    kinds = _kinds(rule.get("type")) or ()
    if not any(_TYPE_CHECKS[kind](value) for kind in kinds):
        return "must be " + " or ".join(_TYPE_NAMES[kind] for kind in kinds)
    if "enum" in rule and value not in rule["enum"]:
        return f"must be one of {', '.join(json.dumps(v, default=str) for v in rule['enum'])}"
    if isinstance(value, str):
        if len(value) < rule.get("minLength", 0):
            return f"must be at least {rule['minLength']} characters"
        if "maxLength" in rule and len(value) > rule["maxLength"]:
            return f"must be at most {rule['maxLength']} characters"
        if "pattern" in rule and re.search(rule["pattern"], value) is None:
            return f"must match {rule['pattern']}"
    elif _is_number(value):
        if "minimum" in rule and value < rule["minimum"]:
            return f"must be >= {rule['minimum']}"
        if "maximum" in rule and value > rule["maximum"]:
            return f"must be <= {rule['maximum']}"
    return None


def specs_from_publish(body: Any) -> tuple[str, str, list[CrewSpec]]:
    """A worker's publish body `{worker, pool, crews: [...]}` → (worker, pool, specs)."""
    if not isinstance(body, dict):
        raise CatalogError("the body must be an object")
    worker, pool, crews = body.get("worker"), body.get("pool"), body.get("crews")
    if not isinstance(worker, str) or not 0 < len(worker) <= 200:
        raise CatalogError("worker must be a name of 1 to 200 characters")
    if not isinstance(pool, str) or not POOL_PATTERN.match(pool):
        raise CatalogError(f"pool must match {POOL_PATTERN.pattern}")
    if not isinstance(crews, list) or len(crews) > MAX_CREWS_PER_PUBLISH:
        raise CatalogError(f"crews must be a list of at most {MAX_CREWS_PER_PUBLISH} entries")
    specs = [CrewSpec.from_public(entry) for entry in crews]
    if wrong := [s.name for s in specs if s.pool != pool]:
        raise CatalogError(f"crews {', '.join(wrong)} are not in pool {pool!r}")
    names: Sequence[str] = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise CatalogError("each crew may be published once")
    return worker, pool, specs
