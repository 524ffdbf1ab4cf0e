"""The catalog contract: what a published crew entry may be, and the input checks."""

from __future__ import annotations

from typing import Any

import pytest

from shared.crews import (
    CatalogError,
    CrewSpec,
    definition_digest,
    input_errors,
    schema_errors,
    specs_from_publish,
)
from tests.doubles.catalog import RESEARCH, SUMMARIZE

ENTRY = RESEARCH.public()


def test_an_entry_round_trips_through_its_public_form() -> None:
    assert CrewSpec.from_public(RESEARCH.public()) == RESEARCH
    assert RESEARCH.deployment == "run-crew-job/gpu"
    assert set(SUMMARIZE.public()) == {
        "name", "description", "kind", "pool", "inputs", "tasks", "version"
    }  # fmt: skip


def test_optional_fields_default() -> None:
    spec = CrewSpec.from_public({"name": "tiny", "pool": "cpu", "inputs": {"type": "object"}})
    assert (spec.kind, spec.tasks, spec.version, spec.description) == ("crew", (), "", "")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Research"}, "crew name 'Research' must match"),
        ({"name": "9lives"}, "must match"),
        ({"name": "x" * 49}, "must match"),
        ({"name": None}, "crew name None"),
        ({"pool": "GPU pool"}, "crew 'research': pool 'GPU pool' must match"),
        ({"pool": 3}, "pool 3 must match"),
        ({"kind": "agent"}, "kind must be one of crew, flow"),
        ({"description": "d" * 2001}, "description must be a string of at most 2000"),
        ({"description": 5}, "description must be a string"),
        ({"tasks": "research_task"}, "tasks must be a list"),
        ({"tasks": [""]}, "tasks must be a list"),
        ({"tasks": ["t"] * 101}, "at most 100 names"),
        ({"version": 2}, "version must be a string"),
        ({"version": "v" * 201}, "at most 200"),
        ({"inputs": None}, "inputs: must be a JSON Schema object"),
        ({"inputs": {"type": "array"}}, "inputs: must be a JSON Schema object"),
    ],
)
def test_from_public_names_what_is_wrong(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogError) as caught:
        CrewSpec.from_public({**ENTRY, **changes})
    assert message in str(caught.value)


def test_from_public_refuses_what_is_not_an_object() -> None:
    with pytest.raises(CatalogError, match="must be an object"):
        CrewSpec.from_public(["research"])


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "properties": []}, "properties must be an object"),
        ({"type": "object", "properties": {"a": "string"}}, "a: must be an object"),
        ({"type": "object", "properties": {"a": {"type": "date"}}}, "a: type must be one of"),
        (
            {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}},
            "a: unsupported keywords format",
        ),
        (
            {"type": "object", "properties": {"a": {"type": "array", "items": {}}}},
            "a: unsupported keywords items",  # it would not be enforced
        ),
        # Rules of the wrong type would make every job of the crew fail at the edge.
        *[
            ({"type": "object", "properties": {"a": {"type": "string", **rule}}}, problem)
            for rule, problem in [
                ({"enum": 5}, "enum must be a non-empty list"),
                ({"enum": "abc"}, "enum must be a non-empty list"),
                ({"enum": None}, "enum must be a non-empty list"),
                ({"enum": []}, "enum must be a non-empty list"),
                ({"minLength": "3"}, "minLength must be a whole number"),
                ({"minLength": True}, "minLength must be a whole number"),
                ({"maxLength": None}, "maxLength must be a whole number"),
                ({"maxLength": -1}, "maxLength must be a whole number"),
                ({"minimum": "0"}, "minimum must be a number"),
                ({"maximum": [1]}, "maximum must be a number"),
                ({"pattern": "("}, "pattern must be a regular expression"),
                ({"pattern": 5}, "pattern must be a regular expression"),
                ({"description": 5}, "description must be a string"),
            ]
        ],
        ({"type": "object", "properties": {"a": {"type": ["string", "date"]}}}, "a: type"),
        ({"type": "object", "properties": {"a": {"type": []}}}, "a: type"),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": [{"a": 1}]},
            "required must list properties",
        ),
        ({"type": "object", "additionalProperties": "yes"}, "additionalProperties must be"),
        (
            {"type": "object", "properties": {f"p{n}": {"type": "string"} for n in range(101)}},
            "at most 100 inputs",
        ),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
            "required must list properties",
        ),
        ({"type": "object", "required": "a"}, "required must list properties"),
    ],
)
def test_schema_errors_name_rules_nobody_would_enforce(schema: Any, problem: str) -> None:
    assert any(problem in p for p in schema_errors(schema)), schema_errors(schema)
    with pytest.raises(CatalogError, match="inputs: "):
        CrewSpec.from_public({**ENTRY, "inputs": schema})


def test_usable_schemas_have_no_schema_errors() -> None:
    assert schema_errors(RESEARCH.inputs) == [] and schema_errors(SUMMARIZE.inputs) == []
    assert schema_errors({"type": "object"}) == []


def test_valid_inputs_have_no_errors() -> None:
    assert input_errors(RESEARCH.inputs, {"topic": "edge computing"}) == []
    assert input_errors(SUMMARIZE.inputs, {"text": "Long text.", "sentences": 3}) == []


TYPED = {
    "type": "object",
    "properties": {
        "ratio": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "options": {"type": "object"},
        "flag": {"type": "boolean"},
        "tone": {"type": "string", "enum": ["plain", "formal"]},
    },
}


@pytest.mark.parametrize(
    ("schema", "inputs", "where", "message"),
    [
        (RESEARCH.inputs, {}, ["inputs", "topic"], "is required"),
        (RESEARCH.inputs, {"topic": ""}, ["inputs", "topic"], "at least 1"),
        (RESEARCH.inputs, {"topic": "x" * 501}, ["inputs", "topic"], "at most 500"),
        (RESEARCH.inputs, {"topic": 5}, ["inputs", "topic"], "must be a string"),
        (RESEARCH.inputs, {"topic": "t", "extra": 1}, ["inputs", "extra"], "not an input"),
        (SUMMARIZE.inputs, {"text": "t", "sentences": True}, ["inputs", "sentences"], "integer"),
        (SUMMARIZE.inputs, {"text": "t", "sentences": 2.5}, ["inputs", "sentences"], "integer"),
        (SUMMARIZE.inputs, {"text": "t", "sentences": 11}, ["inputs", "sentences"], "<= 10"),
        (SUMMARIZE.inputs, {"text": "t", "sentences": 0}, ["inputs", "sentences"], ">= 1"),
        (SUMMARIZE.inputs, [1], ["inputs"], "must be an object"),
        (TYPED, {"ratio": "half"}, ["inputs", "ratio"], "must be a number"),
        (TYPED, {"ratio": True}, ["inputs", "ratio"], "must be a number"),
        (TYPED, {"ratio": 1.5}, ["inputs", "ratio"], "<= 1"),
        (TYPED, {"count": 1.0}, ["inputs", "count"], "must be an integer"),
        (TYPED, {"tags": "a,b"}, ["inputs", "tags"], "must be an array"),
        (TYPED, {"options": []}, ["inputs", "options"], "must be an object"),
        (TYPED, {"flag": 1}, ["inputs", "flag"], "must be a boolean"),
        (TYPED, {"tone": "loud"}, ["inputs", "tone"], 'must be one of "plain", "formal"'),
        (TYPED, {"surprise": 1}, ["inputs", "surprise"], "not an input"),
    ],
)
def test_invalid_inputs_name_the_field(
    schema: Any, inputs: object, where: list[str], message: str
) -> None:
    errors = input_errors(schema, inputs)
    assert any(e["loc"] == where and message in e["msg"] for e in errors), errors


def test_the_new_input_types_accept_their_values() -> None:
    inputs = {"ratio": 0.5, "count": 3, "tags": ["a"], "options": {"k": 1}, "flag": False,
              "tone": "formal"}  # fmt: skip
    assert input_errors(TYPED, inputs) == []
    assert input_errors(TYPED, {"ratio": 1}) == [], "an integer is a number"


def test_additional_properties_true_lets_unknown_inputs_through() -> None:
    open_schema = {**TYPED, "additionalProperties": True}
    assert input_errors(open_schema, {"anything": [1, 2]}) == []
    errors = input_errors(open_schema, {"anything": 1, "count": "x"})
    assert errors == [{"loc": ["inputs", "count"], "msg": "must be an integer"}], "known: checked"


def publish_body(*crews: dict[str, Any], pool: str = "gpu") -> dict[str, Any]:
    return {"worker": "w-1", "pool": pool, "crews": list(crews)}


def test_a_publish_body_gives_its_worker_pool_and_specs() -> None:
    worker, pool, specs = specs_from_publish(publish_body(ENTRY))
    assert (worker, pool, specs) == ("w-1", "gpu", [RESEARCH])
    assert specs_from_publish(publish_body())[2] == [], "a worker with no crews publishes none"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the body must be an object"),
        ({**publish_body(ENTRY), "worker": ""}, "worker must be a name"),
        ({**publish_body(ENTRY), "pool": "Big GPUs"}, "pool must match"),
        ({**publish_body(), "crews": {"research": ENTRY}}, "crews must be a list"),
        ({**publish_body(), "crews": [ENTRY] * 201}, "at most 200"),
        (publish_body(ENTRY, SUMMARIZE.public()), "crews summarize are not in pool 'gpu'"),
        (publish_body(ENTRY, ENTRY), "each crew may be published once"),
        (publish_body({**ENTRY, "kind": "agent"}), "crew 'research': kind"),
    ],
)
def test_a_bad_publish_body_is_refused_with_its_reason(body: Any, message: str) -> None:
    with pytest.raises(CatalogError) as caught:
        specs_from_publish(body)
    assert message in str(caught.value)


def test_definition_digests_are_short_stable_and_order_blind() -> None:
    first = definition_digest({"agents": ["a", "b"], "tasks": {"t": 1}})
    assert first == definition_digest({"tasks": {"t": 1}, "agents": ["a", "b"]})
    assert len(first) == 12 and first != definition_digest({"agents": ["a"]})


def test_every_value_a_usable_schema_allows_is_checked_without_error() -> None:
    """What `schema_errors` accepts, `input_errors` applies to anything a client sends."""
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
            "level": {"type": ["integer", "null"], "minimum": 1, "maximum": 3.5},
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "tags": {"type": "array"},
            "extra": {"type": ["object", "string"]},
        },
        "required": ["name"],
    }
    assert schema_errors(schema) == []
    odd_values = [None, True, 0, -1.5, "", "x" * 10, "ABC", [], {}, [{"a": 1}], {"b": [1]}]
    for name in schema["properties"]:
        for value in odd_values:
            errors = input_errors(schema, {"name": "ok", name: value})
            assert all(e["loc"][0] == "inputs" for e in errors)
    assert input_errors(schema, {"name": "abc", "level": None, "extra": "s"}) == []
    assert input_errors(schema, {"name": "ABC"})[0]["msg"] == "must match ^[a-z]+$"
    assert input_errors(schema, {"name": "a", "level": "2"})[0]["msg"] == (
        "must be an integer or null"
    )
    assert input_errors(schema, {"name": "a", "mode": "medium"})[0]["msg"].startswith(
        "must be one of"
    )
