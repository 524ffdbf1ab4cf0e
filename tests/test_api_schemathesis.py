"""Schemathesis against the in-process app: no 5xx, and every response as documented."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from shared.signing import signed_headers
from tests.conftest import AUTH_A
from tests.doubles.catalog import SUMMARIZE
from tests.test_contract import EXECUTOR_SECRET, seeded_contract_app

# Valid by the schema yet 422 by design: rules across fields, or held in the catalog, that
# the document cannot say (unique document ids in one request, which crews are published
# and each one's input schema, what a published crew may be, an Idempotency-Key reused
# with another body). docs/api.md states them; every other check stays on.
CROSS_FIELD_RULES = [positive_data_acceptance]
# Hypothesis' complaints about generating from big schemas on a slow machine; the app's
# answers are all checked regardless.
GENERATION_NOISE = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8}


@pytest.fixture
async def api_schema(tmp_path: Any) -> Any:
    app: FastAPI = await seeded_contract_app(tmp_path)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


class ExecutorSignature(requests.auth.AuthBase):
    """Signs the body exactly as it will be sent (requests applies auth after the body)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        assert isinstance(body, bytes)
        # The ingestion routes take only ids naming their own job and call, as the
        # executor's client makes them.
        path = (request.path_url or "").split("?")[0].split("/")
        message_id = "fuzz"
        if path[1:4] == ["v1", "internal", "ingestions"] and len(path) == 6:
            message_id = f"ingest:{path[4]}:{path[5]}:fuzz"
        if path[1:4] == ["v1", "internal", "schedules"] and len(path) == 6:
            message_id = f"schedule-run:{path[4]}:{_flow_run_id(body)}"
        request.headers.update(signed_headers(EXECUTOR_SECRET, message_id, int(time.time()), body))
        return request


def _flow_run_id(body: bytes) -> object:
    try:
        return json.loads(body).get("flow_run_id")
    except (ValueError, AttributeError):
        return None


def credentials(case: Any) -> dict[str, Any]:
    """An API key, or for the executor's routes a signature."""
    if case.path.startswith("/v1/internal/"):
        return {"auth": ExecutorSignature()}
    return {"headers": AUTH_A}


def test_the_app_keeps_its_openapi_contract(api_schema: Any) -> None:
    """Every operation the document lists, valid and invalid requests (~270 in all)."""
    for result in api_schema.get_all_operations():
        operation = result.ok()
        raw = operation.definition.raw
        negatable = "requestBody" in raw or "parameters" in raw
        for mode, examples in EXAMPLES.items():
            if mode is GenerationMode.NEGATIVE and not negatable:
                continue  # nothing to send wrong

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=GENERATION_NOISE,
            )
            def conforms(case: Any) -> None:
                response = case.call(**credentials(case))
                excluded = list(CROSS_FIELD_RULES)
                if response.status_code == 413:  # refused for its size before its shape
                    excluded.append(negative_data_rejection)
                case.validate_response(response, excluded_checks=excluded)

            conforms()


def test_existing_resources_are_answered_as_documented(api_schema: Any) -> None:
    """The routes that take an id, given ids that exist (generated ones almost never do)."""

    def call(method: str, path: str, **case: Any) -> Any:
        operation = api_schema[path][method]
        made = operation.Case(media_type="application/json" if "body" in case else None, **case)
        return made.call_and_validate(**credentials(made), excluded_checks=CROSS_FIELD_RULES)

    document = {"documents": [{"id": "doc-1", "text": "Paris is on the Seine."}]}
    assert call("POST", "/v1/documents", body=document).status_code == 200
    job = {"crew": "summarize", "inputs": {"text": "Paris is on the Seine."}}
    job_id = call("POST", "/v1/jobs", body=job).json()["id"]
    on_job = {"job_id": job_id}
    event = {"tenant": "tenant_a", "type": "progress", "progress": {"completed_tasks": 1,
             "total_tasks": 2, "current_task": "summary"}}  # fmt: skip
    publish = {"worker": "w-1", "pool": "cpu", "crews": [SUMMARIZE.public()]}
    ingestion = {"documents": [{"id": "doc-2", "text": "Rome is on the Tiber."}]}
    ingestion_id = call("POST", "/v1/ingestions", body=ingestion).json()["id"]
    on_ingestion = {"job_id": ingestion_id}
    vector = {"id": "doc-2#0", "values": [0.5] * 384, "metadata": {"_document_id": "doc-2",
              "_text": "Rome is on the Tiber."}}  # fmt: skip
    ingested = [
        call("GET", "/v1/ingestions/{job_id}", path_parameters=on_ingestion),
        call("POST", "/v1/internal/ingestions/{job_id}/source", path_parameters=on_ingestion,
             body={"tenant": "tenant_a"}),
        call("POST", "/v1/internal/ingestions/{job_id}/vectors", path_parameters=on_ingestion,
             body={"tenant": "tenant_a", "vectors": [vector]}),
        call("POST", "/v1/internal/ingestions/{job_id}/prepare", path_parameters=on_ingestion,
             body={"tenant": "tenant_a", "documents": [{"id": "doc-2", "chunks": 1}]}),
        call("POST", "/v1/internal/ingestions/{job_id}/documents", path_parameters=on_ingestion,
             body={"tenant": "tenant_a", "documents": [{"id": "doc-2", "chunks": 1}]}),
        call("POST", "/v1/jobs/{job_id}/cancel", path_parameters=on_ingestion),
        call("POST", "/v1/internal/ingestions/{job_id}/source", path_parameters=on_ingestion,
             body={"tenant": "tenant_a"}),
    ]  # fmt: skip
    assert [r.status_code for r in ingested] == [200, 200, 200, 200, 200, 202, 409]
    answered = [
        call("POST", "/v1/internal/crews", body=publish),
        call("GET", "/v1/crews"),
        call("GET", "/v1/documents/{document_id}", path_parameters={"document_id": "doc-1"}),
        call("GET", "/v1/jobs/{job_id}", path_parameters=on_job),
        call("POST", "/v1/internal/jobs/{job_id}/events", path_parameters=on_job, body=event),
        call("GET", "/v1/jobs", query={"limit": 1}),
        call("POST", "/v1/answers", body={"question": "Which river?", "stream": True}),
        call("POST", "/v1/jobs/{job_id}/cancel", path_parameters=on_job),
        call("DELETE", "/v1/documents/{document_id}", path_parameters={"document_id": "doc-1"}),
    ]
    assert [r.status_code for r in answered] == [200, 200, 200, 200, 200, 200, 200, 202, 204]
    schedule = {"crew": "summarize", "inputs": {"text": "t"}, "cron": "0 9 * * mon-fri",
                "timezone": "Europe/Oslo"}  # fmt: skip
    on_schedule = {"schedule_id": call("POST", "/v1/schedules", body=schedule).json()["id"]}
    api_schema.app.state.ports.scheduler.start_run(on_schedule["schedule_id"], "run-1")
    run = {"tenant": "tenant_a", "flow_run_id": "run-1"}
    scheduled = [
        call("GET", "/v1/schedules"),
        call("GET", "/v1/schedules/{schedule_id}", path_parameters=on_schedule),
        call("POST", "/v1/schedules/{schedule_id}/pause", path_parameters=on_schedule),
        call("POST", "/v1/schedules/{schedule_id}/resume", path_parameters=on_schedule),
        call("POST", "/v1/internal/schedules/{schedule_id}/runs", path_parameters=on_schedule,
             body=run),
        call("GET", "/v1/jobs", query={"schedule_id": on_schedule["schedule_id"]}),
        call("DELETE", "/v1/schedules/{schedule_id}", path_parameters=on_schedule),
        call("POST", "/v1/internal/schedules/{schedule_id}/runs", path_parameters=on_schedule,
             body=run),
    ]  # fmt: skip
    assert [r.status_code for r in scheduled] == [200, 200, 200, 200, 200, 200, 204, 410]
