"""The crew manifest: what the edge knows about crews without importing CrewAI.

Each crew declares its inputs (a small JSON Schema subset: an object of string, integer
and boolean properties), the Prefect work pool it runs on and so the deployment that
runs it. `tests/test_crew_manifest.py` keeps this file and `executor/crews/` in sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FLOW_NAME = "run-crew-job"


@dataclass(frozen=True, slots=True)
class CrewSpec:
    name: str
    description: str
    pool: str
    inputs: Mapping[str, Any]  # JSON Schema (object of scalar properties)

    @property
    def deployment(self) -> str:
        """The Prefect deployment, `<flow>/<deployment>`: one per work pool."""
        return f"{FLOW_NAME}/{self.pool}"

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "inputs": dict(self.inputs),
            "pool": self.pool,
        }


CREWS: Mapping[str, CrewSpec] = {
    "research": CrewSpec(
        name="research",
        description=(
            "A researcher searches the tenant's knowledge base about a topic, then a writer "
            "turns the findings into a short cited report."
        ),
        pool="gpu",
        inputs={
            "type": "object",
            "properties": {
                "topic": {"type": "string", "minLength": 1, "maxLength": 500},
                "audience": {"type": "string", "maxLength": 200},
            },
            "required": ["topic"],
            "additionalProperties": False,
        },
    ),
    "summarize": CrewSpec(
        name="summarize",
        description="One agent summarizes the given text in a few sentences.",
        pool="cpu",
        inputs={
            "type": "object",
            "properties": {
                "text": {"type": "string", "minLength": 1, "maxLength": 20000},
                "sentences": {"type": "integer", "minimum": 1, "maximum": 10},
            },
            "required": ["text"],
            "additionalProperties": False,
        },
    ),
}


def input_errors(schema: Mapping[str, Any], inputs: Any) -> list[dict[str, Any]]:
    """Problems with `inputs` against the manifest's schema subset, as `{loc, msg}` items."""
    if not isinstance(inputs, dict):
        return [{"loc": ["inputs"], "msg": "must be an object"}]
    properties: Mapping[str, Any] = schema.get("properties", {})
    errors = [
        {"loc": ["inputs", name], "msg": "is required"}
        for name in schema.get("required", [])
        if name not in inputs
    ]
    for name, value in inputs.items():
        rule = properties.get(name)
        if rule is None:
            errors.append({"loc": ["inputs", name], "msg": "is not an input of this crew"})
        elif (message := _value_error(rule, value)) is not None:
            errors.append({"loc": ["inputs", name], "msg": message})
    return errors


def _value_error(rule: Mapping[str, Any], value: Any) -> str | None:
    kind = rule.get("type")
    if kind == "string":
        if not isinstance(value, str):
            return "must be a string"
        if len(value) < rule.get("minLength", 0):
            return f"must be at least {rule['minLength']} characters"
        if "maxLength" in rule and len(value) > rule["maxLength"]:
            return f"must be at most {rule['maxLength']} characters"
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return "must be an integer"
        if "minimum" in rule and value < rule["minimum"]:
            return f"must be >= {rule['minimum']}"
        if "maximum" in rule and value > rule["maximum"]:
            return f"must be <= {rule['maximum']}"
    elif kind == "boolean" and not isinstance(value, bool):
        return "must be a boolean"
    return None
