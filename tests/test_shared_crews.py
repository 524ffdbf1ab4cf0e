from __future__ import annotations

import pytest

from shared.crews import CREWS, input_errors

RESEARCH = CREWS["research"].inputs
SUMMARIZE = CREWS["summarize"].inputs


def test_manifest_names_pools_and_deployments() -> None:
    assert CREWS["research"].pool == "gpu" and CREWS["summarize"].pool == "cpu"
    assert CREWS["research"].deployment == "run-crew-job/gpu"
    assert set(CREWS["summarize"].public()) == {"name", "description", "inputs", "pool"}


def test_valid_inputs_have_no_errors() -> None:
    assert input_errors(RESEARCH, {"topic": "edge computing"}) == []
    assert input_errors(SUMMARIZE, {"text": "Long text.", "sentences": 3}) == []


@pytest.mark.parametrize(
    ("schema", "inputs", "where", "message"),
    [
        (RESEARCH, {}, ["inputs", "topic"], "is required"),
        (RESEARCH, {"topic": ""}, ["inputs", "topic"], "at least 1"),
        (RESEARCH, {"topic": "x" * 501}, ["inputs", "topic"], "at most 500"),
        (RESEARCH, {"topic": 5}, ["inputs", "topic"], "must be a string"),
        (RESEARCH, {"topic": "t", "extra": 1}, ["inputs", "extra"], "not an input"),
        (SUMMARIZE, {"text": "t", "sentences": True}, ["inputs", "sentences"], "integer"),
        (SUMMARIZE, {"text": "t", "sentences": 11}, ["inputs", "sentences"], "<= 10"),
        (SUMMARIZE, {"text": "t", "sentences": 0}, ["inputs", "sentences"], ">= 1"),
        (SUMMARIZE, [1], ["inputs"], "must be an object"),
    ],
)
def test_invalid_inputs_name_the_field(
    schema: dict, inputs: object, where: list[str], message: str
) -> None:
    errors = input_errors(schema, inputs)
    assert any(e["loc"] == where and message in e["msg"] for e in errors), errors
