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
from collections.abc import Mapping, Sequence
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
        "items",
    ]
)
MAX_CREWS_PER_PUBLISH = 200
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

    @property
    def deployment(self) -> str:
        """The Prefect deployment, `<flow>/<deployment>`: one per work pool."""
        return f"{FLOW_NAME}/{self.pool}"

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
    """What in an input schema `input_errors` could not enforce (empty when usable)."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return ["must be a JSON Schema object with type 'object'"]
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        return ["properties must be an object"]
    problems = []
    for name, rule in properties.items():
        if not isinstance(rule, dict):
            problems.append(f"{name}: must be an object")
            continue
        if rule.get("type") not in INPUT_TYPES:
            problems.append(f"{name}: type must be one of {', '.join(INPUT_TYPES)}")
        if unknown := sorted(set(rule) - PROPERTY_KEYWORDS):
            problems.append(f"{name}: unsupported keywords {', '.join(unknown)}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(r in properties for r in required):
        problems.append("required must list properties of the schema")
    return problems


def input_errors(schema: Mapping[str, Any], inputs: Any) -> list[dict[str, Any]]:
    """Problems with `inputs` against the catalog's schema subset, as `{loc, msg}` items.

    Unknown inputs are refused unless the schema sets `additionalProperties: true`.
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


def _value_error(rule: Mapping[str, Any], value: Any) -> str | None:
    kind = rule.get("type")
    if "enum" in rule and value not in rule["enum"]:
        return f"must be one of {', '.join(json.dumps(v) for v in rule['enum'])}"
    if kind == "string":
        if not isinstance(value, str):
            return "must be a string"
        if len(value) < rule.get("minLength", 0):
            return f"must be at least {rule['minLength']} characters"
        if "maxLength" in rule and len(value) > rule["maxLength"]:
            return f"must be at most {rule['maxLength']} characters"
    elif kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be {'an integer' if kind == 'integer' else 'a number'}"
        if kind == "integer" and not isinstance(value, int):
            return "must be an integer"
        if "minimum" in rule and value < rule["minimum"]:
            return f"must be >= {rule['minimum']}"
        if "maximum" in rule and value > rule["maximum"]:
            return f"must be <= {rule['maximum']}"
    elif kind == "boolean" and not isinstance(value, bool):
        return "must be a boolean"
    elif kind == "array" and not isinstance(value, list):
        return "must be an array"
    elif kind == "object" and not isinstance(value, dict):
        return "must be an object"
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
