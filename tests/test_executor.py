"""The executor in-process: crews of every kind loaded from edgecrew.toml and run with the
scripted LLM, the job context, progress, per-run files, and the edge client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from executor.catalog import crew_for_run, load_catalog
from executor.config import ConfigError, load_config
from executor.edge_client import EdgeClient, EdgeUnreachable
from executor.flows import run_crew
from executor.loaded_crew import CrewLoadError
from executor.run_context import NotInAJob, list_files
from executor.settings import ExecutorSettings, ExecutorSettingsError
from executor.tools import KnowledgeSearchTool
from shared.crews import CrewSpec, input_errors
from shared.signing import new_secret, verify
from tests.crews.projects import Projects, create_projects, toml_for
from tests.doubles.crew_llm import ScriptedLLM

SECRET = new_secret()
SETTINGS = ExecutorSettings(edge_url="http://edge.test", executor_secret=SECRET)
REPO_CONFIG = Path(__file__).resolve().parents[1] / "edgecrew.toml"


class FakeEdge:
    """An httpx transport playing the edge: checks signatures, records events and searches."""

    def __init__(self, fail_first: int = 0) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.searches: list[dict[str, Any]] = []
        self.fail_first = fail_first

    def __call__(self, request: httpx.Request) -> httpx.Response:
        message_id = verify(SECRET, dict(request.headers), request.content, now=int(time.time()))
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

    def progress(self) -> list[dict[str, Any]]:
        return [body["progress"] for _, body in self.events if body["type"] == "progress"]


def client(edge: FakeEdge) -> EdgeClient:
    return EdgeClient(SETTINGS, client=httpx.Client(transport=httpx.MockTransport(edge)),
                      sleep=lambda _: None)  # fmt: skip


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> Projects:
    return create_projects(tmp_path_factory.mktemp("crewai-projects"))


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> ScriptedLLM:
    """The executor's LLM, for agents that name none (and for `llm = "executor"` crews)."""
    scripted = ScriptedLLM(model="scripted-fake")
    monkeypatch.setattr("executor.flows.build_llm", lambda settings: scripted)
    return scripted


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Point the executor at an edgecrew.toml, as a worker does with EDGECREW_CONFIG."""

    def use(text_or_path: str | Path) -> Path:
        path = Path(text_or_path) if isinstance(text_or_path, Path) else tmp_path / "edgecrew.toml"
        if not isinstance(text_or_path, Path):
            path.write_text(text_or_path)
        monkeypatch.setenv("EDGECREW_CONFIG", str(path))
        crew_for_run.cache_clear()
        return path

    yield use
    crew_for_run.cache_clear()


def run(crew: str, inputs: dict[str, Any], edge: FakeEdge, job: str = "job_1") -> dict[str, Any]:
    return run_crew(job, "tenant_a", crew, inputs, settings=SETTINGS, edge=client(edge))


# --- the repo's own crews ---------------------------------------------------------------


def test_the_repo_config_publishes_both_example_crews_with_their_schemas() -> None:
    catalog = load_catalog(load_config(REPO_CONFIG))
    assert catalog.errors == []
    specs = {name: loaded.spec for name, loaded in catalog.crews.items()}
    assert {n: (s.kind, s.pool) for n, s in specs.items()} == {
        "research": ("crew", "gpu"),
        "summarize": ("crew", "cpu"),
    }
    assert {n: loaded.kind for n, loaded in catalog.crews.items()} == {
        "research": "classic",
        "summarize": "json",
    }
    assert specs["research"].tasks == ("research_task", "report_task")
    assert specs["research"].version.startswith("0.2.0+")
    # What a worker publishes is what the edge accepts.
    for spec in specs.values():
        assert CrewSpec.from_public(spec.public()) == spec
    assert input_errors(specs["summarize"].inputs, {"text": "x", "sentences": 11})


def test_research_uses_the_knowledge_tool_for_the_jobs_tenant_and_writes_a_report(
    configured: Any, llm: ScriptedLLM
) -> None:
    configured(REPO_CONFIG)
    edge = FakeEdge()
    result = run("research", {"topic": "edgecrew"}, edge)
    assert edge.searches == [{"tenant": "tenant_a", "query": "edgecrew", "top_k": 4}]
    assert "readme#3" in result["tasks"][0]["output"], "the tool's passage reached the agent"
    assert [t["name"] for t in result["tasks"]] == ["research_task", "report_task"]
    assert any("a general audience" in call for call in llm.calls), "the toml's default"
    assert edge.progress() == [
        {"completed_tasks": 1, "total_tasks": 2, "current_task": "report_task"},
        {"completed_tasks": 2, "total_tasks": 2, "current_task": None},
    ]
    assert [mid for mid, _ in edge.events] == ["job_1:progress:1", "job_1:progress:2"]
    (report,) = result["files"]
    assert report["name"] == "report.md" and report["text"].startswith("FAKE ANSWER")
    assert report["size"] == len(report["text"].encode())


def test_summarize_json_first_fills_the_projects_defaults(
    configured: Any, llm: ScriptedLLM
) -> None:
    configured(REPO_CONFIG)
    result = run("summarize", {"text": "A long text about clouds."}, FakeEdge())
    assert any("in 3 sentences" in c and "A long text about clouds." in c for c in llm.calls)
    assert result["files"] == []


def test_the_knowledge_tool_refuses_to_run_outside_a_job() -> None:
    with pytest.raises(NotInAJob):
        KnowledgeSearchTool()._run("anything")


# --- projects made by CrewAI's CLI ------------------------------------------------------


def test_generated_projects_load_with_inputs_from_their_placeholders_and_state(
    projects: Projects, tmp_path: Path
) -> None:
    path = tmp_path / "edgecrew.toml"
    path.write_text(toml_for(projects))
    catalog = load_catalog(load_config(path))
    assert catalog.errors == []
    classic, content, scaffold = (catalog.crews[n].spec for n in ("classic", "content", "scaffold"))
    assert classic.inputs["required"] == ["current_year", "topic"]
    assert classic.tasks == ("research_task", "reporting_task")
    assert (content.kind, content.tasks) == ("flow", ("plan_content", "generate_content",
                                                      "save_content"))  # fmt: skip
    assert set(content.inputs["properties"]) == {"topic", "outline", "draft", "final_post"}
    assert content.inputs["required"] == []  # every state field has a default
    assert scaffold.inputs == {"type": "object", "properties": {}, "required": [],
                               "additionalProperties": False}  # fmt: skip
    assert classic.version.startswith("0.1.0+") and scaffold.version.startswith("0.1.0+")


def test_a_classic_project_runs_unmodified_on_the_executors_llm(
    projects: Projects, configured: Any, llm: ScriptedLLM
) -> None:
    configured(toml_for(projects))
    edge = FakeEdge()
    result = run("classic", {"topic": "tides", "current_year": "2026"}, edge)
    assert len(result["tasks"]) == 2 and result["output"].startswith("FAKE ANSWER")
    assert any("tides Senior Data Researcher" in call for call in llm.calls)
    assert [f["name"] for f in result["files"]] == ["report.md"]  # the template's output_file
    assert [p["completed_tasks"] for p in edge.progress()] == [1, 2]


def test_a_flow_reports_progress_after_each_step_and_returns_its_state(
    projects: Projects, configured: Any, llm: ScriptedLLM
) -> None:
    configured(toml_for(projects))
    edge = FakeEdge()
    result = run("content", {}, edge)
    assert result["steps"] == ["plan_content", "generate_content", "save_content"]
    assert result["state"]["final_post"].startswith("FAKE ANSWER")
    assert [f["name"] for f in result["files"]] == ["output/post.md"]
    deadline = time.monotonic() + 5  # CrewAI runs event handlers on a thread pool
    while len(edge.progress()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(p["completed_tasks"] for p in edge.progress()) == [1, 2, 3]
    assert {p["total_tasks"] for p in edge.progress()} == {3}


def test_a_json_first_scaffold_runs_offline_with_llm_executor(
    projects: Projects, configured: Any, llm: ScriptedLLM
) -> None:
    configured(toml_for(projects))
    result = run("scaffold", {}, FakeEdge())
    assert result["output"].startswith("FAKE ANSWER") and llm.calls


def test_an_agent_that_names_its_own_llm_keeps_it(projects: Projects, configured: Any,
                                                  llm: ScriptedLLM) -> None:  # fmt: skip
    configured(toml_for(projects).replace('llm = "executor"', ""))
    loaded = crew_for_run("scaffold")
    assert [a.llm.model for a in loaded.build().agents] == ["gpt-4o"]  # as crew.jsonc says


def test_runs_of_one_crew_write_their_files_in_directories_of_their_own(
    projects: Projects, configured: Any, llm: ScriptedLLM
) -> None:
    configured(toml_for(projects))
    before = set(Path.cwd().iterdir())
    first = run("classic", {"topic": "one", "current_year": "1"}, FakeEdge(), job="job_a")
    second = run("classic", {"topic": "two", "current_year": "2"}, FakeEdge(), job="job_b")
    assert set(Path.cwd().iterdir()) == before, "nothing is left where the worker runs"
    assert [f["name"] for f in first["files"]] == [f["name"] for f in second["files"]]


# --- broken configs and crews -----------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[crews.x]\npool = "cpu"', "source is required"),
        ('[crews.x]\nsource = "a:B"\npool = "GPU!"', "pool must match"),
        ('[crews.x]\nsource = "a:B"\ncolour = "red"', "unknown keys colour"),
        ('[crews.x]\nsource = "nothing"', "neither 'module:Class' nor a .jsonc"),
        ('[crews.x]\nsource = "a:B"\nllm = "mine"', "llm must be one of"),
        ('[crews.x]\nsource = "a:B"\ninputs = { type = "array" }', "inputs: must be"),
        ('[crews."Bad Name"]\nsource = "a:B"', "a crew name must match"),
        ("[crews.x\n", "edgecrew.toml"),
    ],
)
def test_a_bad_config_names_the_crew_and_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "edgecrew.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path, plugins=False)


def test_a_crew_that_cannot_load_is_named_with_its_error(
    projects: Projects, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jsonc"
    broken.write_text('{"name": "b", "agents": ["ghost"], "tasks": []}')
    path = tmp_path / "edgecrew.toml"
    path.write_text(
        '[crews.missing]\nsource = "no_such_module:Crew"\n'
        f'[crews.ghost]\nsource = "{broken}"\n'
        '[crews.notacrew]\nsource = "json:dumps"\n'
    )
    catalog = load_catalog(load_config(path, plugins=False))
    errors = {e.entry.name: str(e) for e in catalog.errors}
    assert catalog.crews == {}
    assert "ModuleNotFoundError" in errors["missing"] and "crew 'missing'" in errors["missing"]
    assert "ghost" in errors["ghost"]
    assert "not a @CrewBase class" in errors["notacrew"]
    assert all(isinstance(e, CrewLoadError) for e in catalog.errors)


def test_installed_packages_offer_crews_through_entry_points(
    projects: Projects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution on sys.path with an `edgecrew.crews` entry point, as pip leaves it."""
    site = tmp_path / "site"
    dist = site / "our_agents-1.2.3.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: our-agents\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text(
        "[edgecrew.crews]\nplugged = classic_crew.crew:ClassicCrew\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(projects.classic / "src"))
    path = tmp_path / "edgecrew.toml"
    path.write_text('[crews.plugged]\npool = "gpu"\ndescription = "From a package."\n')
    config = load_config(path)
    assert config.crews["plugged"].source == "classic_crew.crew:ClassicCrew"
    assert config.crews["plugged"].pool == "gpu"  # the toml table of that name sets it
    catalog = load_catalog(config, "gpu")
    assert catalog.errors == [] and catalog.crews["plugged"].spec.description == "From a package."


def test_listed_files_skip_crewais_storage_and_include_only_small_text(tmp_path: Path) -> None:
    (tmp_path / ".crewai").mkdir()
    (tmp_path / ".crewai" / "memory.db").write_bytes(b"x" * 10)
    (tmp_path / "small.md").write_text("hello")
    (tmp_path / "big.txt").write_text("y" * 70_000)
    (tmp_path / "image.bin").write_bytes(b"\xff\xfe\x00\x01")
    entries = {e["name"]: e for e in list_files(tmp_path)}
    assert set(entries) == {"small.md", "big.txt", "image.bin"}
    assert entries["small.md"]["text"] == "hello"
    assert "text" not in entries["big.txt"] and entries["big.txt"]["size"] == 70_000
    assert "text" not in entries["image.bin"]


# --- the edge client --------------------------------------------------------------------


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


def test_the_catalog_is_published_signed_with_the_pools_crews() -> None:
    published: list[dict[str, Any]] = []

    def edge(request: httpx.Request) -> httpx.Response:
        verify(SECRET, dict(request.headers), request.content, now=int(time.time()))
        assert request.url.path == "/v1/internal/crews"
        published.append(json.loads(request.content))
        return httpx.Response(200, json={"crews": ["research"]})

    edge_client = EdgeClient(SETTINGS, client=httpx.Client(transport=httpx.MockTransport(edge)))
    spec = load_catalog(load_config(REPO_CONFIG), "gpu").crews["research"].spec
    assert edge_client.publish_crews("w1", "gpu", [spec.public()]) == ["research"]
    assert published == [{"worker": "w1", "pool": "gpu", "crews": [spec.public()]}]


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


# --- edgecrew crews check ---------------------------------------------------------------


def test_crews_check_lists_each_crew_and_fails_on_a_broken_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge.local.cli import app

    runner = CliRunner()
    good = runner.invoke(app, ["crews", "check", "--config", str(REPO_CONFIG)],
                         env={"COLUMNS": "200"})  # fmt: skip
    assert good.exit_code == 0, good.output
    assert "research" in good.output and "crew (classic)" in good.output
    assert "summarize" in good.output and "crew (json)" in good.output
    broken = tmp_path / "edgecrew.toml"
    text = REPO_CONFIG.read_text().replace('"examples/', f'"{REPO_CONFIG.parent}/examples/')
    broken.write_text(text.replace("research.crew:", "research.nothere:"))
    bad = runner.invoke(app, ["crews", "check", "--config", str(broken)], env={"COLUMNS": "200"})
    assert bad.exit_code == 1
    assert "crew 'research'" in bad.output and "ModuleNotFoundError" in bad.output
    assert "crew 'summarize'" not in bad.output and "crew (json)" in bad.output, "still listed"


# --- what the review found: inputs, isolation, results -----------------------------------


def _json_crew(folder: Path, task: dict[str, Any], inputs: dict[str, Any] | None = None) -> Path:
    """A JSON-first project as `crewai create crew` lays it out, with one task."""
    (folder / "agents").mkdir(parents=True)
    (folder / "agents" / "writer.jsonc").write_text(
        json.dumps({"role": "Writer", "goal": "Write.", "backstory": "You write.", "tools": []})
    )
    tasks = [{"name": "write", "expected_output": "Text.", "agent": "writer", **task}]
    crew = {"name": "t", "agents": ["writer"], "process": "sequential", "inputs": inputs or {},
            "tasks": tasks}  # fmt: skip
    (folder / "crew.jsonc").write_text(json.dumps(crew))
    return folder / "crew.jsonc"


def test_inputs_follow_crewais_interpolation_and_schema_defaults_apply(
    tmp_path: Path, configured: Any, llm: ScriptedLLM
) -> None:
    source = _json_crew(tmp_path / "p", {"description": "About {topic}, as {{persona}}."})
    schema = "{ type = 'object', properties = { topic = { type = 'string', default = 'tides' }, persona = { type = 'string' } }, required = ['persona'] }"  # noqa: E501
    configured(f'[crews.t]\nsource = "{source}"\nllm = "executor"\ninputs = {schema}\n')
    loaded = crew_for_run("t")
    derived = load_catalog(load_config(tmp_path / "edgecrew.toml", plugins=False))
    assert loaded.defaults == {"topic": "tides"}
    run("t", {"persona": "a pirate"}, FakeEdge())
    assert any("About tides" in call for call in llm.calls), "the schema's default was used"
    path = tmp_path / "derived.toml"
    path.write_text(f'[crews.t]\nsource = "{source}"\n')
    derived = load_catalog(load_config(path, plugins=False))
    assert derived.crews["t"].spec.inputs["required"] == ["persona", "topic"]  # as CrewAI asks


def test_an_input_in_a_file_name_cannot_leave_the_runs_directory(
    tmp_path: Path, configured: Any, llm: ScriptedLLM
) -> None:
    source = _json_crew(tmp_path / "p", {"description": "Write.", "output_file": "out/{name}.md"})
    configured(f'[crews.t]\nsource = "{source}"\nllm = "executor"\n')
    spec = crew_for_run("t").spec
    assert input_errors(spec.inputs, {"name": "../../../../tmp/owned"}), "the edge refuses it"
    assert input_errors(spec.inputs, {"name": "weekly report"}) == []
    with pytest.raises(ValueError, match="outside the job's own directory"):
        run("t", {"name": "../../../../tmp/owned"}, FakeEdge())  # a hand-made schema's job
    assert not Path("/tmp/owned.md").exists()
    result = run("t", {"name": "weekly"}, FakeEdge())
    assert [f["name"] for f in result["files"]] == ["out/weekly.md"]


def test_a_flows_state_schema_keeps_optional_union_and_nested_types(tmp_path: Path) -> None:
    module = tmp_path / "typed_flow.py"
    module.write_text(
        "from pydantic import BaseModel\n"
        "from crewai.flow import Flow, start\n"
        "class Sub(BaseModel):\n    x: int = 0\n"
        "class State(BaseModel):\n"
        "    topic: str\n    level: int | None = None\n    either: int | str = 1\n"
        "    sub: Sub = Sub()\n"
        "class TypedFlow(Flow[State]):\n"
        "    @start()\n    def go(self):\n        return self.state.topic\n"
    )
    path = tmp_path / "edgecrew.toml"
    path.write_text(f'[crews.typed]\nsource = "typed_flow:TypedFlow"\npath = "{tmp_path}"\n')
    spec = load_catalog(load_config(path, plugins=False)).crews["typed"].spec
    rules = spec.inputs["properties"]
    assert rules["level"]["type"] == ["integer", "null"]
    assert rules["either"]["type"] == ["integer", "string"]
    assert rules["sub"]["type"] == "object"
    assert spec.inputs["required"] == ["topic"]
    for accepted in ({"topic": "t", "level": None}, {"topic": "t", "either": "s"},
                     {"topic": "t", "sub": {"x": 2}}):  # fmt: skip
        assert input_errors(spec.inputs, accepted) == [], accepted


def test_a_flow_never_loads_another_jobs_saved_state(
    projects: Projects, configured: Any, llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured(toml_for(projects))
    loaded = crew_for_run("content")
    seen: list[Any] = []
    original = loaded.target.kickoff

    def kickoff(self: Any, inputs: Any = None, **kwargs: Any) -> Any:
        seen.append(inputs)
        return original(self, inputs=inputs, **kwargs)

    monkeypatch.setattr(loaded.target, "kickoff", kickoff)
    run("content", {"id": "someone-elses-state-id", "topic": "t"}, FakeEdge())
    assert seen and "id" not in (seen[0] or {})


def test_crewais_import_time_storage_paths_point_into_the_run(tmp_path: Path) -> None:
    import crewai.rag.chromadb.config as chroma

    from executor.run_context import run_directory

    before = chroma.DEFAULT_STORAGE_PATH
    with run_directory("job_store") as _:
        inside = chroma.DEFAULT_STORAGE_PATH
        assert Path(inside).is_relative_to(Path.cwd())
        assert chroma._default_settings().persist_directory == inside
    assert before == chroma.DEFAULT_STORAGE_PATH
    assert not Path(inside).exists(), "removed with the run's directory"


def test_a_projects_knowledge_folder_is_there_and_not_listed(tmp_path: Path) -> None:
    from executor.run_context import run_directory

    (tmp_path / "knowledge").mkdir()
    (tmp_path / "knowledge" / "user_preference.txt").write_text("likes tea")
    with run_directory("job_k", tmp_path) as files:
        assert Path("knowledge/user_preference.txt").read_text() == "likes tea"
        Path("mine.txt").write_text("written")
    assert [f["name"] for f in files.entries] == ["mine.txt"]
    assert (tmp_path / "knowledge" / "user_preference.txt").exists(), "the project is untouched"


def test_results_become_json_and_fit_in_one_callback() -> None:
    import datetime

    from executor.results import MAX_RESULT_BYTES, fitted

    when = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    assert fitted({"state": {"at": when, "tags": {"a"}}})["state"]["at"] == str(when)
    huge = {"output": "\x01" * 400_000, "tasks": [{"name": "t", "output": "é" * 300_000}],
            "files": [{"name": "f.md", "size": 60_000, "text": "x" * 60_000}]}  # fmt: skip
    small = fitted(huge)
    assert len(json.dumps(small).encode()) <= MAX_RESULT_BYTES
    assert small["truncated"] is True and "text" not in small["files"][0]
    assert small["files"][0]["name"] == "f.md" and small["output"].startswith("\x01")
    assert fitted({"output": "ok"}) == {"output": "ok"}, "a small result is left alone"


def test_a_refused_publish_says_why_and_stops_retrying(caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from executor.catalog import publish_until_taken

    calls: list[int] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        problem = {"title": "Unusable crew catalog", "errors": [{"msg": "crew 'x': inputs: bad"}]}
        return httpx.Response(422, json=problem)

    edge = EdgeClient(SETTINGS, client=httpx.Client(transport=httpx.MockTransport(refuse)),
                      sleep=lambda _: None)  # fmt: skip
    assert publish_until_taken(edge, "w", "cpu", [], threading.Event(), every_seconds=0) is False
    assert calls == [1]
    assert "crew 'x': inputs: bad" in caplog.text and "refused" in caplog.text


def test_a_derived_input_takes_the_type_of_its_default(tmp_path: Path) -> None:
    source = _json_crew(tmp_path / "p", {"description": "In {n} lines, {fast}: {topic}."},
                        inputs={"n": 3, "fast": True})  # fmt: skip
    path = tmp_path / "edgecrew.toml"
    path.write_text(f'[crews.t]\nsource = "{source}"\n')
    spec = load_catalog(load_config(path, plugins=False)).crews["t"].spec
    rules = spec.inputs["properties"]
    assert (rules["n"]["type"], rules["fast"]["type"], rules["topic"]["type"]) == (
        "integer", "boolean", "string"
    )  # fmt: skip
    assert spec.inputs["required"] == ["topic"]
    assert input_errors(spec.inputs, {"topic": "t", "n": 5}) == []
