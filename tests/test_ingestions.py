"""Bulk ingestion: `POST /v1/ingestions` as a job, and the executor's side of it run
in-process against the real edge app (the executor's signed calls go through the app),
with the edge's own index as the sink. The local stack runs the same through Prefect in
tests/test_ingestions_stack.py; tests/test_cloudflare_executor.py covers the Cloudflare
sink against Cloudflare's REST shapes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from edge.app import create_app
from edge.ports import Ports, RunState
from edge.settings import Settings
from executor.edge_client import EdgeClient, EdgeUnreachable
from executor.ingest import IngestError, ProgressReporter, build_sink, ingest, run_ingestion
from executor.settings import ExecutorSettings
from executor.sinks import EdgeIndexSink
from shared.documents import INGESTION_CREW
from shared.signing import new_secret, signed_headers
from tests.conftest import AUTH_A, AUTH_B, KEY_A, KEY_B
from tests.doubles.models import RecordingEmbedder
from tests.doubles.orchestrator import InMemoryOrchestrator
from tests.doubles.queues import RecordingQueue
from tests.support import sqlite_ports

SECRET = new_secret()
EXECUTOR = ExecutorSettings(edge_url="http://edge.test", executor_secret=SECRET)
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]


class RecordingOrchestrator(InMemoryOrchestrator):
    """Also records which deployment each run was created on."""

    def __init__(self) -> None:
        super().__init__()
        self.deployments: list[str] = []

    async def submit(self, deployment: str, **kwargs: Any) -> RunState:
        self.deployments.append(deployment)
        return await super().submit(deployment, **kwargs)


@dataclass
class Edge:
    app: FastAPI
    http: TestClient
    ports: Ports
    orchestrator: RecordingOrchestrator
    queue: RecordingQueue

    def executor(self, **overrides: Any) -> EdgeClient:
        """The executor's client, talking to this app (signed like a worker's)."""
        return EdgeClient(EXECUTOR, client=self.http, sleep=lambda _: None, **overrides)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    settings = Settings(
        api_keys={KEY_A: "tenant_a", KEY_B: "tenant_b"},
        embed_model="fake-bow",
        chunk_size=200,
        chunk_overlap=40,
        executor_secret=SECRET,
        secret_key="k" * 40,
        allow_loopback_webhooks=True,
    )
    orchestrator, queue = RecordingOrchestrator(), RecordingQueue()
    ports = sqlite_ports(tmp_path, orchestrator=orchestrator, deliveries=queue)
    app = create_app(settings, ports)
    with TestClient(app, base_url="http://edge.test") as http:
        yield Edge(app, http, ports, orchestrator, queue)


def documents(count: int, *, prefix: str = "note") -> list[dict[str, Any]]:
    """Small documents, each with two words no other has (`<n>`, `zq<n>x`) to search for
    (two: the fake embedder hashes words into 384 slots, one may share a common word's)."""
    return [
        {
            "id": f"{prefix}-{n}",
            "text": f"Note {n} is about {WORDS[n % len(WORDS)]} and the marker zq{n}x. "
            + " ".join(WORDS[(n + k) % len(WORDS)] for k in range(40)),
            "metadata": {"source": "bulk", "n": n},
        }
        for n in range(count)
    ]


def submit(edge: Edge, body: Mapping[str, Any], **headers: str) -> httpx.Response:
    return edge.http.post("/v1/ingestions", json=body, headers={**AUTH_A, **headers})


def run_executor(edge: Edge, job_id: str) -> dict[str, Any]:
    """What the flow does for the job, with the fake embedder the edge uses."""
    client = edge.executor()
    return run_ingestion(
        job_id, "tenant_a", settings=EXECUTOR, edge=client, local_embedder=RecordingEmbedder()
    )


def index_rows(edge: Edge, namespace: str) -> dict[str, tuple[list[float], dict[str, Any]]]:
    space = edge.ports.vectors._namespace(namespace)  # type: ignore[attr-defined]
    return {
        space.ids[row]: ([round(float(x), 6) for x in space.matrix[row]], space.metadata[row])
        for row in range(space.size)
    }


# --- the route ------------------------------------------------------------------------------


def test_an_ingestion_is_a_job_handed_to_the_ingestion_deployment(edge: Edge) -> None:
    response = submit(edge, {"documents": documents(3), "metadata": {"batch": "b1"}})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == f"/v1/ingestions/{accepted['id']}"
    assert accepted["status"] == "queued" and accepted["documents"] == 3
    assert accepted["progress"] == {"documents_done": 0, "documents_total": 3, "current": None}
    assert accepted["urls"] == {"self": f"/v1/ingestions/{accepted['id']}",
                                "job": f"/v1/jobs/{accepted['id']}",
                                "cancel": f"/v1/jobs/{accepted['id']}/cancel"}  # fmt: skip
    assert edge.orchestrator.deployments == ["ingest-documents/cpu"]
    (parameters,) = edge.orchestrator.submitted
    # The documents wait at the edge: Prefect gets their count and digest, no text.
    assert set(parameters) == {"job_id", "tenant", "crew", "inputs"}
    assert parameters["crew"] == INGESTION_CREW
    assert parameters["inputs"]["documents"] == 3 and "zq0x" not in json.dumps(parameters)

    job = edge.http.get(f"/v1/jobs/{accepted['id']}", headers=AUTH_A).json()
    assert job["crew"] == INGESTION_CREW and job["status"] == "queued"
    assert job["metadata"] == {"batch": "b1"}
    assert edge.http.get(accepted["urls"]["self"], headers=AUTH_A).json() == accepted
    # Another tenant's ingestion, or a crew's job, is no ingestion.
    assert edge.http.get(accepted["urls"]["self"], headers=AUTH_B).status_code == 404


def test_a_crew_job_is_not_an_ingestion(edge: Edge) -> None:
    from tests.doubles.catalog import publish_shipped_crews

    edge.http.portal.call(publish_shipped_crews, edge.ports.kv)  # type: ignore[union-attr]
    job = edge.http.post("/v1/jobs", json={"crew": "summarize", "inputs": {"text": "x"}},
                         headers=AUTH_A).json()  # fmt: skip
    assert edge.orchestrator.deployments == ["run-crew-job/cpu"]
    assert edge.http.get(f"/v1/ingestions/{job['id']}", headers=AUTH_A).status_code == 404


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"documents": []}, ["body", "documents"]),
        ({"documents": "1001 tiny ones"}, ["body", "documents"]),
        ({"documents": [{"id": "a", "text": "x"}] * 2}, ["body", "documents"]),
        ({"documents": [{"id": "bad#id", "text": "x"}]}, ["body", "documents", 0, "id"]),
        ({"documents": [{"id": "a", "text": ""}]}, ["body", "documents", 0, "text"]),
        ({"documents": [{"id": "a", "text": "x", "metadata": {"_doc": 1}}]},
         ["body", "documents", 0, "metadata", "_doc", "[key]"]),
        ({"documents": [{"id": "a", "text": "x", "title": "t"}]},
         ["body", "documents", 0, "title"]),
        ({"documents": [{"id": "a", "text": "x"}], "metadata": {"m": "x" * 5000}},
         ["body", "metadata"]),
        ({"documents": [{"id": "a", "text": "x"}], "webhook": {"url": "https://10.0.0.1/h"}},
         ["body", "webhook", "url"]),
    ],
)  # fmt: skip
def test_bad_ingestions_are_422_naming_the_field(
    edge: Edge, body: dict[str, Any], loc: list[Any]
) -> None:
    if body["documents"] == "1001 tiny ones":  # one over the limit, within the 1 MiB body
        body = {"documents": [{"id": f"d{n}", "text": "x"} for n in range(1001)]}
    response = submit(edge, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert loc in [error["loc"][: len(loc)] for error in response.json()["errors"]]
    assert edge.orchestrator.submitted == []


def test_a_body_over_the_limit_is_413(edge: Edge) -> None:
    body = {"documents": [{"id": f"d{n}", "text": "x" * 100_000} for n in range(11)]}
    assert submit(edge, body).status_code == 413


def test_an_idempotency_key_makes_one_ingestion(edge: Edge) -> None:
    body = {"documents": documents(5)}
    first = submit(edge, body, **{"Idempotency-Key": "load-1"}).json()
    reordered = [dict(reversed(list(d.items()))) for d in documents(5)]  # key order: no matter
    again = submit(edge, {"documents": reordered}, **{"Idempotency-Key": "load-1"})
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert len(edge.orchestrator.submitted) == 1
    other = submit(edge, {"documents": documents(6)}, **{"Idempotency-Key": "load-1"})
    assert other.status_code == 422
    assert other.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


# --- the executor's calls -------------------------------------------------------------------


def test_executor_routes_are_signed_and_scoped_to_the_tenants_ingestion(edge: Edge) -> None:
    job_id = submit(edge, {"documents": documents(2)}).json()["id"]
    url = f"/v1/internal/ingestions/{job_id}/source"
    assert edge.http.post(url, json={"tenant": "tenant_a"}).status_code == 401
    client = edge.executor()
    source = client.ingestion_source(job_id, "tenant_a")
    assert [d["id"] for d in source["documents"]] == ["note-0", "note-1"]
    assert (source["chunk_size"], source["chunk_overlap"]) == (200, 40)
    assert (source["embed_model"], source["dimensions"]) == ("fake-bow", 384)
    with pytest.raises(EdgeUnreachable) as missing:
        client.ingestion_source(job_id, "tenant_b")
    assert missing.value.status_code == 404
    wrong_size = [{"id": "note-0#0", "values": [0.1] * 3, "metadata": {}}]
    with pytest.raises(EdgeUnreachable) as refused:
        client.write_vectors(job_id, "tenant_a", wrong_size)
    assert refused.value.status_code == 422 and "384" in refused.value.detail


def test_a_cancelled_ingestion_writes_nothing_more(edge: Edge) -> None:
    job_id = submit(edge, {"documents": documents(2)}).json()["id"]
    assert edge.http.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A).status_code == 202
    with pytest.raises(EdgeUnreachable) as closed:
        run_executor(edge, job_id)
    assert closed.value.status_code == 409
    assert edge.http.get("/v1/documents", headers=AUTH_A).json()["documents"] == []


# --- end to end in-process --------------------------------------------------------------------


def test_three_hundred_documents_ingested_in_bulk_are_listed_searched_and_cited(
    edge: Edge,
) -> None:
    hook = {"url": "http://127.0.0.1:9/hooks", "events": ["job.progress", "job.succeeded"]}
    accepted = submit(edge, {"documents": documents(300), "webhook": hook}).json()
    client = edge.executor()
    clock = iter(range(0, 10_000, 2))  # two seconds a step: every group reports progress
    source = client.ingestion_source(accepted["id"], "tenant_a")
    sink = build_sink(
        EXECUTOR, source, lambda v: client.write_vectors(accepted["id"], "tenant_a", v),
        local_embedder=RecordingEmbedder(),
    )  # fmt: skip
    result = ingest(
        source, sink, tenant="tenant_a",
        prepare=lambda docs: client.prepare_documents(accepted["id"], "tenant_a", docs),
        register=lambda docs: client.register_documents(accepted["id"], "tenant_a", docs),
        progress=ProgressReporter(client, accepted["id"], "tenant_a"),
        clock=lambda: float(next(clock)),
    )  # fmt: skip
    assert result["documents"] == 300 and result["sink"] == "edge"
    assert result["chunks"] > 300  # the documents are longer than one 200-character chunk
    midway = edge.http.get(accepted["urls"]["self"], headers=AUTH_A).json()
    assert midway["status"] == "running"
    assert 0 < midway["progress"]["documents_done"] < 300  # reported per group, not the last
    client.event(accepted["id"], "tenant_a", "succeeded", {"type": "succeeded", "result": result})

    done = edge.http.get(accepted["urls"]["self"], headers=AUTH_A).json()
    assert done["status"] == "succeeded" and done["result"] == result
    assert done["progress"]["documents_done"] == 300
    listed = edge.http.get("/v1/documents?limit=1000", headers=AUTH_A).json()["documents"]
    assert len(listed) == 300 and {d["id"] for d in listed} == {f"note-{n}" for n in range(300)}
    record = edge.http.get("/v1/documents/note-42", headers=AUTH_A).json()
    assert record["metadata"] == {"source": "bulk", "n": 42}
    found = edge.http.post("/v1/search", json={"query": "zq137x 137", "top_k": 1},
                           headers=AUTH_A).json()["matches"]  # fmt: skip
    assert found[0]["document_id"] == "note-137" and found[0]["metadata"]["source"] == "bulk"
    answer = edge.http.post("/v1/answers", json={"question": "What is zq137x (137)?"},
                            headers=AUTH_A).json()  # fmt: skip
    assert answer["citations"][0]["document_id"] == "note-137"
    events = [message["event"] for message, _ in edge.queue.sent if "event" in message]
    assert "job.progress" in events and events[-1] == "job.succeeded"
    # Another tenant sees none of it; DELETE works on a bulk-ingested document.
    assert edge.http.get("/v1/documents", headers=AUTH_B).json()["documents"] == []
    assert edge.http.delete("/v1/documents/note-137", headers=AUTH_A).status_code == 204
    gone = edge.http.post("/v1/search", json={"query": "zq137x 137", "top_k": 1},
                          headers=AUTH_A).json()["matches"]  # fmt: skip
    assert not gone or gone[0]["document_id"] != "note-137"


def test_a_bulk_ingested_document_is_the_same_records_as_one_posted(edge: Edge) -> None:
    (document,) = documents(1)
    long = {**document, "text": document["text"] * 6}
    posted = edge.http.post("/v1/documents", json={"documents": [long]},
                            headers=AUTH_B).json()  # fmt: skip
    job_id = submit(edge, {"documents": [long]}).json()["id"]
    run_executor(edge, job_id)
    assert index_rows(edge, "tenant_a") == index_rows(edge, "tenant_b")
    assert len(index_rows(edge, "tenant_a")) == posted["documents"][0]["chunks"] > 3
    bulk = edge.http.get(f"/v1/documents/{long['id']}", headers=AUTH_A).json()
    one = edge.http.get(f"/v1/documents/{long['id']}", headers=AUTH_B).json()
    assert {**bulk, "updated_at": ""} == {**one, "updated_at": ""}


def test_reingesting_in_bulk_replaces_chunks_and_moves_the_corpus_version(edge: Edge) -> None:
    (document,) = documents(1)
    first = submit(edge, {"documents": [{**document, "text": document["text"] * 6}]}).json()
    run_executor(edge, first["id"])
    before = edge.http.portal.call(edge.ports.kv.get, "corpus:tenant_a")  # type: ignore[union-attr]
    second = submit(edge, {"documents": [document]}).json()
    run_executor(edge, second["id"])
    after = edge.http.portal.call(edge.ports.kv.get, "corpus:tenant_a")  # type: ignore[union-attr]
    assert before and after and before != after, "cached answers are not served from before"
    rows = index_rows(edge, "tenant_a")
    record = edge.http.get(f"/v1/documents/{document['id']}", headers=AUTH_A).json()
    assert len(rows) == record["chunks"], "the longer version's extra chunks are gone"


def test_the_local_sink_refuses_an_edge_that_embeds_with_another_model(edge: Edge) -> None:
    source = {"embed_model": "@cf/baai/bge-small-en-v1.5", "dimensions": 384}
    with pytest.raises(IngestError, match="EDGECREW_VECTORIZE_INDEX"):
        build_sink(EXECUTOR, source, lambda v: 0, local_embedder=RecordingEmbedder())
    cloudflare = ExecutorSettings(edge_url="http://e", executor_secret=SECRET,
                                  cloudflare_account_id="a", cloudflare_api_token="t",
                                  vectorize_index="docs")  # fmt: skip
    with pytest.raises(IngestError, match="not a Workers AI model"):
        build_sink(cloudflare, {"embed_model": "all-MiniLM-L6-v2", "dimensions": 384}, print)


def test_edge_calls_stay_under_the_body_limit(edge: Edge) -> None:
    sent: list[int] = []

    def post(vectors: Sequence[dict[str, Any]]) -> int:
        sent.append(len(json.dumps({"tenant": "tenant_a", "vectors": vectors})))
        return len(vectors)

    from shared.documents import document_chunks

    chunks = [c for n in range(300) for c in document_chunks(
        f"d{n}", "word " * 800, {"k": "v" * 256}, size=4000, overlap=100)]  # fmt: skip
    EdgeIndexSink(RecordingEmbedder(), post, batch_size=300).write("tenant_a", chunks)
    assert sum(1 for _ in sent) > 1 and max(sent) < 1_048_576


def test_vectors_sent_to_the_edge_are_exact_float32_in_fewer_bytes() -> None:
    import numpy as np

    from executor.sinks import _compact

    vector = np.random.default_rng(7).standard_normal(384).astype(np.float32)
    as_float64 = [float(x) for x in vector]
    compact = _compact(as_float64)
    assert np.array_equal(np.asarray(compact, dtype=np.float32), vector)
    assert len(json.dumps(compact)) < 0.75 * len(json.dumps(as_float64))


# --- what a run that stops half-way, or odd input, leaves -------------------------------------


def test_a_run_stopped_between_writing_and_registering_leaves_only_deletable_documents(
    edge: Edge,
) -> None:
    """A cancel (or crash) after a group's chunks are in the index but before they are
    registered: the documents are prepared first, so every chunk id the run wrote is
    listed and DELETE removes it, for a new document and for a longer new version."""
    (note,) = documents(1)
    run_executor(edge, submit(edge, {"documents": [note]}).json()["id"])
    short = edge.http.get(f"/v1/documents/{note['id']}", headers=AUTH_A).json()["chunks"]
    longer = {**note, "text": note["text"] * 8}
    fresh = {"id": "fresh", "text": "A fresh note about zqfreshx. " * 30}
    job_id = submit(edge, {"documents": [longer, fresh]}).json()["id"]
    client = edge.executor()
    source = client.ingestion_source(job_id, "tenant_a")
    sink = build_sink(EXECUTOR, source, lambda v: client.write_vectors(job_id, "tenant_a", v),
                      local_embedder=RecordingEmbedder())  # fmt: skip

    def stopped(_: object) -> None:
        raise RuntimeError("cancelled: the run's process was stopped here")

    prepare = lambda docs: client.prepare_documents(job_id, "tenant_a", docs)  # noqa: E731
    with pytest.raises(RuntimeError, match="cancelled"):
        ingest(source, sink, tenant="tenant_a", prepare=prepare, register=stopped,
               progress=lambda *_: None)  # fmt: skip

    written = index_rows(edge, "tenant_a")
    assert any(i.startswith("fresh#") for i in written) and len(written) > short
    page = edge.http.get("/v1/documents", headers=AUTH_A).json()["documents"]
    listed = {d["id"]: d["chunks"] for d in page}
    assert listed.keys() == {note["id"], "fresh"}
    assert listed[note["id"]] >= sum(i.startswith(f"{note['id']}#") for i in written)
    for document_id in listed:
        assert edge.http.delete(f"/v1/documents/{document_id}", headers=AUTH_A).status_code == 204
    assert index_rows(edge, "tenant_a") == {}, "no chunk is left that nothing reaches"


def test_non_ascii_metadata_fits_the_edges_calls(edge: Edge) -> None:
    """Sent as UTF-8, not \\u escapes (6 bytes a character), and in calls measured in
    bytes: 60 documents with long Japanese metadata all land."""
    docs = [{**d, "metadata": {f"k{k}": "語" * 256 for k in range(16)}} for d in documents(60)]
    job_id = submit(edge, {"documents": docs}).json()["id"]
    assert run_executor(edge, job_id)["documents"] == 60
    listed = edge.http.get("/v1/documents?limit=100", headers=AUTH_A).json()["documents"]
    assert len(listed) == 60


@pytest.mark.parametrize("path", ["/v1/ingestions", "/v1/jobs"])
def test_nan_and_infinity_are_not_json_and_are_refused(edge: Edge, path: str) -> None:
    bodies = {
        "/v1/ingestions": '{"documents": [{"id": "a", "text": "x", "metadata": {"x": NaN}}]}',
        "/v1/jobs": '{"crew": "summarize", "inputs": {"text": "t"}, "metadata": {"m": Infinity}}',
    }
    headers = {**AUTH_A, "Content-Type": "application/json"}
    response = edge.http.post(path, content=bodies[path], headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "not a JSON number" in response.json()["detail"]
    assert edge.orchestrator.deployments == [], "nothing was handed to Prefect"


def test_a_signed_call_cannot_be_replayed_to_another_ingestion(edge: Edge) -> None:
    first = submit(edge, {"documents": documents(1)}).json()["id"]
    second = submit(edge, {"documents": documents(2, prefix="other")}).json()["id"]
    body = json.dumps({"tenant": "tenant_a"}).encode()
    headers = signed_headers(SECRET, f"ingest:{first}:source:1", int(time.time()), body)
    headers["Content-Type"] = "application/json"
    own = edge.http.post(f"/v1/internal/ingestions/{first}/source", content=body, headers=headers)
    assert own.status_code == 200
    replayed = edge.http.post(
        f"/v1/internal/ingestions/{second}/source", content=body, headers=headers
    )
    assert replayed.status_code == 401, replayed.text


def test_documents_kv_does_not_show_yet_are_a_503_the_executor_retries(edge: Edge) -> None:
    """On Cloudflare the executor's call may land where KV has not caught up with the
    client's write: the ingestion is open, so the edge says retry, not 404."""
    job_id = submit(edge, {"documents": documents(1)}).json()["id"]
    keys = edge.http.portal.call(edge.ports.kv.list)  # type: ignore[union-attr]
    (blob,) = [k.name for k in keys.keys if k.name.startswith("ingest:tenant_a:")]
    edge.http.portal.call(edge.ports.kv.delete, blob)  # type: ignore[union-attr]
    with pytest.raises(EdgeUnreachable) as later:
        edge.executor().ingestion_source(job_id, "tenant_a")
    assert later.value.status_code == 503
