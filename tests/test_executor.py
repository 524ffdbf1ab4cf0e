"""The executor in-process: crews from YAML, progress callbacks, the knowledge tool."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import yaml

from executor.crews import CREWS_DIR, build_crew, crew_names, load_crew
from executor.edge_client import EdgeClient, EdgeUnreachable
from executor.flows import run_crew
from executor.settings import ExecutorSettings, ExecutorSettingsError
from shared.crews import CREWS
from shared.signing import new_secret, verify
from tests.doubles.crew_llm import ScriptedLLM

SECRET = new_secret()
SETTINGS = ExecutorSettings(edge_url="http://edge.test", executor_secret=SECRET)


class FakeEdge:
    """An httpx transport playing the edge: checks signatures, records events and searches."""

    def __init__(self, fail_first: int = 0) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.searches: list[dict[str, Any]] = []
        self.fail_first = fail_first

    def __call__(self, request: httpx.Request) -> httpx.Response:
        message_id = verify(SECRET, dict(request.headers), request.content, now=_now())
        if self.fail_first:
            self.fail_first -= 1
            return httpx.Response(503)
        body = json.loads(request.content)
        if request.url.path == "/v1/internal/search":
            self.searches.append(body)
            match = {"chunk_id": "readme#3", "text": "edgecrew runs crews on Prefect."}
            return httpx.Response(200, json={"matches": [match], "timings_ms": {}})
        self.events.append((message_id, body))
        return httpx.Response(200, json={"status": body["type"]})


def _now() -> int:
    import time

    return int(time.time())


def client(edge: FakeEdge) -> EdgeClient:
    return EdgeClient(SETTINGS, client=httpx.Client(transport=httpx.MockTransport(edge)),
                      sleep=lambda _: None)  # fmt: skip


def test_crew_folders_match_the_edge_manifest() -> None:
    assert crew_names() == sorted(CREWS)
    for name, spec in CREWS.items():
        definition = load_crew(name)
        assert (definition.name, definition.pool) == (spec.name, spec.pool)
        assert definition.description == spec.description
        assert definition.inputs == dict(spec.inputs)
        assert set(definition.defaults) <= set(spec.inputs["properties"])
        for task in definition.tasks.values():
            assert task["agent"] in definition.agents
        raw = yaml.safe_load((CREWS_DIR / name / "config" / "crew.yaml").read_text())
        assert raw["pool"] in {"gpu", "cpu"}


def test_research_crew_uses_the_knowledge_tool_and_reports_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    edge = FakeEdge()
    monkeypatch.setattr(
        "executor.flows.build_llm", lambda settings: ScriptedLLM(model="scripted-fake")
    )
    result = run_crew("job_1", "tenant_a", "research", {"topic": "edgecrew"},
                      settings=SETTINGS, edge=client(edge))  # fmt: skip
    assert edge.searches == [{"tenant": "tenant_a", "query": "edgecrew", "top_k": 4}]
    assert "readme#3" in result["tasks"][0]["output"], "the tool's passage reached the agent"
    assert [t["name"] for t in result["tasks"]] == ["research", "report"]
    assert result["output"].startswith("FAKE ANSWER")
    progress = [body["progress"] for _, body in edge.events]
    assert progress == [
        {"completed_tasks": 1, "total_tasks": 2, "current_task": "report"},
        {"completed_tasks": 2, "total_tasks": 2, "current_task": None},
    ]
    assert [mid for mid, _ in edge.events] == ["job_1:progress:1", "job_1:progress:2"]


def test_summarize_crew_fills_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    llm = ScriptedLLM(model="scripted-fake")
    monkeypatch.setattr("executor.flows.build_llm", lambda settings: llm)
    run_crew("job_2", "t", "summarize", {"text": "A long text about clouds."},
             settings=SETTINGS, edge=client(FakeEdge()))  # fmt: skip
    assert any(
        "in 3 sentences" in call and "A long text about clouds." in call for call in llm.calls
    )


def test_callbacks_retry_with_the_same_id_until_acknowledged() -> None:
    edge = FakeEdge(fail_first=2)
    answer = client(edge).event("job_1", "t", "running:1", {"type": "running"})
    assert answer == {"status": "running"} and edge.events[0][0] == "job_1:running:1"


def test_callbacks_give_up_on_client_errors() -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "no job"})

    edge = EdgeClient(SETTINGS, client=httpx.Client(transport=httpx.MockTransport(reject)),
                      sleep=lambda _: None)  # fmt: skip
    with pytest.raises(EdgeUnreachable, match="HTTP 404"):
        edge.event("job_1", "t", "running:1", {"type": "running"})


def test_build_crew_wires_tools_only_where_declared() -> None:
    crew = build_crew(
        load_crew("research"),
        llm=ScriptedLLM(model="scripted-fake"),
        tools={"knowledge_search": _tool()},
    )
    tools = {agent.role: [t.name for t in agent.tools] for agent in crew.agents}
    assert tools == {"Knowledge base researcher": ["knowledge_search"], "Report writer": []}


def _tool() -> Any:
    from executor.tools import knowledge_search_tool

    return knowledge_search_tool(client(FakeEdge()), "t")


def test_executor_settings_need_edge_url_and_secret() -> None:
    with pytest.raises(ExecutorSettingsError, match="EDGECREW_EDGE_URL"):
        ExecutorSettings.from_env({"EDGECREW_EXECUTOR_SECRET": SECRET})
    with pytest.raises(ExecutorSettingsError, match="whsec_"):
        ExecutorSettings.from_env(
            {"EDGECREW_EDGE_URL": "http://e", "EDGECREW_EXECUTOR_SECRET": "x"}
        )


def test_running_and_progress_are_best_effort() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    edge = EdgeClient(SETTINGS, client=httpx.Client(transport=httpx.MockTransport(down)),
                      sleep=lambda _: None)  # fmt: skip
    edge.notify("job_1", "t", "running:1", {"type": "running"})  # logs, does not raise
    with pytest.raises(EdgeUnreachable):
        edge.event("job_1", "t", "succeeded", {"type": "succeeded", "result": {}})
