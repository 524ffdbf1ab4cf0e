"""A bulk ingestion through the real local stack: `POST /v1/ingestions` on the edge, the
`ingest-documents/cpu` deployment on Prefect, edgecrew's worker forking the flow, MiniLM
embedding in the flow process, the vectors handed to the edge's index over signed calls,
the documents registered; then the edge lists, searches and cites them. The edge's LLM is
a stand-in (answers are about retrieval here; tests/test_dev_stack_e2e.py runs SmolLM2)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from edge.settings import DEV_API_KEYS
from tests.doubles.openai_server import FakeOpenAIServer
from tests.support import DevStack

pytestmark = pytest.mark.e2e
KEY = DEV_API_KEYS.split(":", 1)[1]
HEADERS = {"Authorization": f"Bearer {KEY}"}
COUNT = 300
ROLES = [
    "billing queue", "search cluster", "metrics store", "mail relay", "build farm",
    "image cache", "auth gateway", "backup vault", "feature flags", "log pipeline",
]  # fmt: skip
CITIES = ["Lisbon", "Turin", "Ghent", "Krakow", "Porto", "Tallinn", "Bergen", "Lyon"]


def corpus() -> list[dict[str, Any]]:
    """A few hundred short notes about systems; one alone is about the staging database."""
    notes = [
        {
            "id": f"system-{n}",
            "text": f"System {n} is the {ROLES[n % len(ROLES)]} of team {n % 17}. It runs in "
            f"{CITIES[n % len(CITIES)]} and is patched every {n % 6 + 1} weeks.",
            "metadata": {"kind": "system", "team": n % 17},
        }
        for n in range(COUNT - 1)
    ]
    target = {"id": "heron-7", "metadata": {"kind": "system", "team": 3},
              "text": "Heron-7 is the staging database. It lives in the Oslo data centre "
                      "and is restored from backup every night."}  # fmt: skip
    return [*notes[:150], target, *notes[150:]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("ingest-stack")
    env = {"EDGECREW_CREW_LLM_FACTORY": "tests.doubles.crew_llm:scripted_llm"}
    with FakeOpenAIServer() as llm:
        env["EDGECREW_LLM_BASE_URL"] = llm.base_url
        with DevStack.running(tmp, "--no-demo", env=env) as running:
            yield running


def test_hundreds_of_documents_ingest_as_a_job_and_answer_questions(stack: DevStack) -> None:
    documents = corpus()
    started = time.monotonic()
    response = httpx.post(f"{stack.base_url}/v1/ingestions", json={"documents": documents},
                          headers={**HEADERS, "Idempotency-Key": "bulk-1"}, timeout=60)  # fmt: skip
    assert response.status_code == 202, response.text
    accepted = response.json()
    job = stack.wait_for_job(accepted["id"], KEY, timeout=240)
    elapsed = time.monotonic() - started
    assert job["status"] == "succeeded", job
    assert job["crew"] == "@ingestion" and job["result"]["documents"] == COUNT
    assert job["result"]["sink"] == "edge" and job["result"]["embed_model"] == "all-MiniLM-L6-v2"
    view = httpx.get(f"{stack.base_url}{accepted['urls']['self']}", headers=HEADERS).json()
    assert view["status"] == "succeeded"
    assert view["progress"]["documents_done"] == view["documents"] == COUNT
    print(f"\n{COUNT} documents ingested in {elapsed:.1f} s from POST to succeeded "
          f"({job['result']['documents_per_second']} documents/s inside the flow, "
          f"{job['result']['seconds']} s)")  # fmt: skip

    listed = httpx.get(f"{stack.base_url}/v1/documents", params={"limit": 1000},
                       headers=HEADERS).json()["documents"]  # fmt: skip
    assert {d["id"] for d in listed} == {d["id"] for d in documents}
    question = "Which data centre hosts the staging database?"
    search = httpx.post(f"{stack.base_url}/v1/search", json={"query": question, "top_k": 3},
                        headers=HEADERS, timeout=60).json()  # fmt: skip
    assert search["matches"][0]["document_id"] == "heron-7", search
    answer = httpx.post(f"{stack.base_url}/v1/answers", json={"question": question},
                        headers=HEADERS, timeout=60).json()  # fmt: skip
    assert answer["citations"][0]["document_id"] == "heron-7", answer
    assert "Oslo" in answer["citations"][0]["text"]

    again = httpx.post(f"{stack.base_url}/v1/ingestions", json={"documents": documents},
                       headers={**HEADERS, "Idempotency-Key": "bulk-1"}, timeout=60)  # fmt: skip
    assert again.status_code == 202 and again.json()["id"] == accepted["id"]
    assert again.json()["status"] == "succeeded", "the same job, not a second run"
