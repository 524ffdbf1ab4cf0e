"""`edgecrew`: the local stack and a small client, built with typer + rich."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import httpx
import typer
from dotenv import load_dotenv
from rich.console import Console
from rich.text import Text

from edge.local.demo import demo_documents, file_document, ingest_documents
from edge.local.llm_service import START_TIMEOUT_S, local_llm_service
from edge.local.processes import Service, ServiceFailed, Supervisor
from edge.local.readiness import catalog_problems, stack_problems
from edge.local.stack import deploy_flows, dev_secrets, prefect_services, worker
from edge.settings import DEV_API_KEYS, parse_api_keys
from executor.config import ConfigError, EdgecrewConfig, load_config

app = typer.Typer(help="edgecrew: an HTTPS front door for AI agents.", no_args_is_help=True)
console = Console()

Port = Annotated[int, typer.Option(min=1, max=65535)]
CONFIG_HELP = "edgecrew.toml naming the crews (default: $EDGECREW_CONFIG, else ./edgecrew.toml)"
ConfigFile = Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help=CONFIG_HELP)]


@app.command()
def dev(
    port: Port = 8787,
    llm_port: Port = 8081,
    host: str = "127.0.0.1",
    demo: Annotated[bool, typer.Option(help="Ingest the demo corpus (the project's docs)")] = True,
    jobs: Annotated[bool, typer.Option(help="Start Prefect and the crew workers")] = True,
    prefect_port: Port = 4200,
    config: ConfigFile = None,
) -> None:
    """Start the whole local stack (LLM, Prefect, workers, edge); Ctrl-C stops everything."""
    load_dotenv(Path.cwd() / ".env")
    env = _stack_env(llm_port)
    crews = _crew_config(config) if jobs else None
    data_dir = Path(env["EDGECREW_DATA_DIR"])
    supervisor = Supervisor(data_dir / "logs")
    # Ctrl-C and `kill` both stop the stack. SIGINT is set explicitly: a parent that
    # ignores it (a background job, some CI runners) would otherwise leave it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    base_url = f"http://{host}:{port}"
    try:
        workers = _start_parts(
            supervisor, env, host, port, llm_port, prefect_port if jobs else None, crews
        )
        key, tenant = _first_key(env["EDGECREW_API_KEYS"])
        _check_ready(supervisor, base_url, key, env, crews, workers)
        if demo:
            _ingest_demo(supervisor, base_url, key, tenant)
        _print_ready(base_url, env["EDGECREW_API_KEYS"], key, supervisor, tenant)
        if jobs:
            console.print(f"Prefect UI: http://127.0.0.1:{prefect_port}  (crew logs per flow run)")
        while True:
            time.sleep(0.5)
            for event in supervisor.watch():
                console.print(f"[yellow]{event}[/]", highlight=False)
    except ServiceFailed as exc:
        _error(exc)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        console.print("\nstopping (workers first, so they report their runs)…")
    finally:
        supervisor.stop_all()
        console.print("stopped")


def _start_parts(
    supervisor: Supervisor,
    env: dict[str, str],
    host: str,
    port: int,
    llm_port: int,
    prefect_port: int | None,
    crews: EdgecrewConfig | None,
) -> dict[str, str]:
    """Start every part in dependency order, each healthy before the next; `env` gains
    what the edge needs for jobs; returns each worker's health URL. Stopping goes the
    other way round."""
    if "EDGECREW_LLM_BASE_URL" not in os.environ:
        console.print(f"[bold]starting[/] local LLM (SmolLM2-135M) on port {llm_port}")
        data_dir = Path(env["EDGECREW_DATA_DIR"])
        supervisor.start(local_llm_service(llm_port, data_dir), timeout=START_TIMEOUT_S)
    api_url = f"http://127.0.0.1:{prefect_port}/api"
    if prefect_port is not None:
        console.print(f"[bold]starting[/] Prefect server on port {prefect_port}")
        for service in prefect_services(prefect_port, Path(env["EDGECREW_DATA_DIR"])):
            supervisor.start(service, timeout=180)  # its database first
        assert crews is not None
        deploy_flows(api_url, crews.pool_limits())
        env |= _jobs_env(Path(env["EDGECREW_DATA_DIR"]), api_url)
    console.print(f"[bold]starting[/] edge on http://{host}:{port}")
    supervisor.start(_edge_service(host, port, env))
    if prefect_port is None or crews is None:
        return {}
    executor_env = {
        "EDGECREW_EDGE_URL": f"http://{host}:{port}",
        "EDGECREW_EXECUTOR_SECRET": env["EDGECREW_EXECUTOR_SECRET"],
        "EDGECREW_CREW_LLM_BASE_URL": env["EDGECREW_LLM_BASE_URL"],
        "EDGECREW_CREW_LLM_MODEL": env["EDGECREW_LLM_MODEL"],
    }
    if crews.path is not None:
        executor_env["EDGECREW_CONFIG"] = str(crews.path)
    if not crews.crews:
        console.print("[yellow]no crews configured[/]: add them to edgecrew.toml "
                      "(docs/crews.md); jobs are refused until a worker publishes one")  # fmt: skip
    health_urls = {}
    for pool in crews.pools:
        names = ", ".join(entry.name for entry in crews.in_pool(pool)) or "no crews"
        console.print(f"[bold]starting[/] Prefect worker for the {pool!r} pool ({names})")
        service = worker(pool, api_url, executor_env)
        supervisor.start(service)
        health_urls[service.name] = service.health_url
    return health_urls


def _error(problem: object) -> None:
    """`error: …` in red; the message itself is printed as it is (it may hold brackets)."""
    console.print(Text.assemble(("error:", "red"), " ", str(problem)), highlight=False)


def _crew_config(path: Path | None) -> EdgecrewConfig:
    """The crews the workers will offer, read (not loaded) here to know their pools."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise ServiceFailed(str(exc)) from exc


def _ingest_demo(supervisor: Supervisor, base_url: str, key: str, tenant: str) -> None:
    try:
        result = ingest_documents(base_url, key, demo_documents())
    except httpx.HTTPError as exc:
        died = supervisor.dead_parts()
        lines = [f"the demo corpus could not be ingested: {exc}", *died]
        raise ServiceFailed("\n".join(lines)) from exc
    chunks = sum(d["chunks"] for d in result)
    console.print(f"ingested {len(result)} demo documents ({chunks} chunks) for {tenant!r}")


def _check_ready(
    supervisor: Supervisor, base_url: str, key: str, env: dict[str, str],
    crews: EdgecrewConfig | None, workers: dict[str, str],
) -> None:  # fmt: skip
    """Say ready only once a real generation, a real embedding, every dependency the edge
    probes and each worker's crew catalog (published by this start, not left from an
    earlier one) have worked; otherwise name what failed (and how a part died)."""
    console.print("checking: a generation, an embedding, the edge's dependencies…")
    problems = stack_problems(
        base_url, key, llm_base_url=env["EDGECREW_LLM_BASE_URL"],
        llm_model=env["EDGECREW_LLM_MODEL"], llm_api_key=env.get("EDGECREW_LLM_API_KEY"),
    )  # fmt: skip
    if not problems and crews is not None:
        problems = catalog_problems(base_url, key, sorted(crews.crews), workers)
    if not problems:
        return
    died = supervisor.dead_parts()
    raise ServiceFailed("not ready:\n" + "\n".join(f"- {p}" for p in problems + died))


crews_app = typer.Typer(help="The crews edgecrew.toml names.", no_args_is_help=True)
app.add_typer(crews_app, name="crews")


@crews_app.command("check")
def crews_check(config: ConfigFile = None) -> None:
    """Load each configured crew without running it; exit 1 if any cannot be loaded."""
    from rich.table import Table

    from executor.catalog import check_runtime, load_catalog

    try:
        crews = load_config(config)
    except ConfigError as exc:
        _error(exc)
        raise typer.Exit(1) from exc
    catalog = load_catalog(crews)
    table = Table("crew", "kind", "pool", "inputs (* required)", "tasks or steps", "version")
    for name, loaded in catalog.crews.items():
        spec = loaded.spec
        required = set(spec.inputs.get("required", []))
        inputs = ", ".join(
            f"{field}{'*' if field in required else ''}: {rule.get('type')}"
            for field, rule in spec.inputs.get("properties", {}).items()
        )
        kind = "flow" if loaded.kind == "flow" else f"crew ({loaded.kind})"
        table.add_row(name, kind, spec.pool, inputs or "-", ", ".join(spec.tasks), spec.version)
    console.print(f"{crews.path or 'no edgecrew.toml'}: {len(crews.crews)} crew(s)")
    console.print(table)
    problems = [str(error) for error in catalog.errors] + check_runtime()
    for problem in problems:
        _error(problem)
    if problems:
        raise typer.Exit(1)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="Text or Markdown files")],
    url: str = "http://127.0.0.1:8787",
    key: Annotated[str, typer.Option(envvar="EDGECREW_API_KEY")] = "dev-key-change-me",
    source: Annotated[str, typer.Option(help="`source` metadata, for filters")] = "cli",
) -> None:
    """Ingest files into the knowledge base (the id is the file name without suffix)."""
    documents = [file_document(path, source) for path in paths]
    for result in ingest_documents(url, key, documents):
        console.print(f"{result['id']}: {result['chunks']} chunks")


@app.command()
def ask(
    question: str,
    url: str = "http://127.0.0.1:8787",
    key: Annotated[str, typer.Option(envvar="EDGECREW_API_KEY")] = "dev-key-change-me",
) -> None:
    """Ask the knowledge base a question and stream the answer."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    with httpx.stream(
        "POST", f"{url}/v1/answers", json={"question": question}, headers=headers, timeout=120
    ) as response:
        if response.status_code != 200:
            response.read()
            console.print(f"[red]{response.status_code}[/] {response.text}")
            raise typer.Exit(1)
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "token":
                console.print(line[6:], end="")
            elif line.startswith("data:") and event == "done":
                done = json.loads(line[5:])
                console.print()
                for n, citation in enumerate(done["citations"], 1):
                    console.print(f"  [{n}] {citation['chunk_id']} (score {citation['score']})")


@app.command()
def job(
    crew: Annotated[str, typer.Argument(help="The crew to run (see GET /v1/crews)")],
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="name=value, repeatable")
    ] = None,
    json_inputs: Annotated[
        str | None, typer.Option("--json", help="All inputs as one JSON object")
    ] = None,
    url: str = "http://127.0.0.1:8787",
    key: Annotated[str, typer.Option(envvar="EDGECREW_API_KEY")] = "dev-key-change-me",
    idempotency_key: Annotated[str | None, typer.Option(help="Resubmit safely")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to follow it")] = 900.0,
) -> None:
    """Submit a crew job and follow it: status, progress after each task, the result."""
    body = {"crew": crew, "inputs": _job_inputs(inputs or [], json_inputs)}
    headers = {"Authorization": f"Bearer {key}"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        response = client.post("/v1/jobs", json=body)
        if response.status_code != 202:
            console.print(f"[red]{response.status_code}[/] {response.text}", highlight=False)
            raise typer.Exit(1)
        current = response.json()
        console.print(f"job [bold]{current['id']}[/] {current['status']}")
        if not wait:
            return
        current = _follow(client, current, timeout)
    if current["status"] != "succeeded":
        raise typer.Exit(1)


def _job_inputs(pairs: list[str], raw_json: str | None) -> dict[str, object]:
    inputs: dict[str, object] = {}
    if raw_json is not None:
        try:
            loaded = json.loads(raw_json)
        except ValueError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--json") from exc
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--json")
        inputs.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r} is not name=value", param_hint="--input")
        inputs[name] = value
    return inputs


def _follow(client: httpx.Client, current: dict[str, object], timeout: float) -> dict[str, object]:
    """Poll the job, printing each change, until it ends (or `timeout`, or Ctrl-C)."""
    terminal = {"succeeded", "failed", "cancelled"}
    shown = (current["status"], current.get("progress"))
    deadline = time.monotonic() + timeout
    try:
        while current["status"] not in terminal and time.monotonic() < deadline:
            time.sleep(0.5)
            reply = client.get(f"/v1/jobs/{current['id']}")
            if reply.status_code == 429:  # over the rate limit: wait as told
                time.sleep(float(reply.headers.get("Retry-After", "1")))
                continue
            reply.raise_for_status()
            current = reply.json()
            now = (current["status"], current.get("progress"))
            if now != shown:
                console.print(_describe(current), highlight=False)
                shown = now
    except KeyboardInterrupt:
        console.print(f"\nstopped following; the job goes on: {current['id']}")
        raise typer.Exit(130) from None
    if current["status"] == "succeeded":
        result = current.get("result")
        output = result.get("output") if isinstance(result, dict) else result
        console.print(str(output), highlight=False, markup=False)
    elif current["status"] not in terminal:
        console.print(f"still {current['status']} after {timeout:.0f} s: {current['id']}")
    return current


def _describe(job: dict[str, object]) -> str:
    status = str(job["status"])
    progress = job.get("progress")
    if status == "running" and isinstance(progress, dict):
        done, total, upcoming = (
            progress.get("completed_tasks"),
            progress.get("total_tasks"),
            progress.get("current_task"),
        )
        return f"running: {done}/{total} tasks" + (f", next: {upcoming}" if upcoming else "")
    error = job.get("error")
    if status == "failed" and isinstance(error, dict):
        return f"failed: {error.get('kind')}: {error.get('message')}"
    return status


def main() -> None:
    app()


def _stack_env(llm_port: int) -> dict[str, str]:
    from edge.local.bootstrap import local_env

    env = local_env(os.environ)
    if not os.environ.get("EDGECREW_API_KEYS"):
        console.print(
            "EDGECREW_API_KEYS is not set: using the dev default "
            f"[bold]{DEV_API_KEYS}[/] (set it in the environment or .env)"
        )
        env["EDGECREW_API_KEYS"] = DEV_API_KEYS
    if "EDGECREW_LLM_BASE_URL" not in os.environ:  # we start the LLM: point at its port
        env["EDGECREW_LLM_BASE_URL"] = f"http://127.0.0.1:{llm_port}/v1"
    return env


def _jobs_env(data_dir: Path, api_url: str) -> dict[str, str]:
    """What the edge needs for jobs locally; secrets from the environment win over dev ones."""
    secrets = dev_secrets(data_dir)
    for name in secrets:
        secrets[name] = os.environ.get(name) or secrets[name]
    return {
        **secrets,
        "EDGECREW_PREFECT_API_URL": api_url,
        # Local mode only: lets webhooks reach a receiver on this machine over plain http.
        "EDGECREW_ALLOW_LOOPBACK_WEBHOOKS": "true",
    }


def _edge_service(host: str, port: int, env: dict[str, str]) -> Service:
    return Service(
        name="edge",
        hint="a settings error in its log names the variable; fix it in the environment or .env",
        argv=[
            sys.executable, "-m", "uvicorn", "edge.local.bootstrap:create_local_app",
            "--factory", "--host", host, "--port", str(port), "--no-access-log",
        ],
        health_url=f"http://{host}:{port}/healthz",
        env=env,
    )  # fmt: skip


def _first_key(raw: str) -> tuple[str, str]:
    key, tenant = next(iter(parse_api_keys(raw).items()))
    return key, tenant


def _print_ready(
    base_url: str, raw_keys: str, key: str, supervisor: Supervisor, tenant: str
) -> None:
    # Only the documented dev key is ever printed; a configured key stays a placeholder.
    shown = key if raw_keys == DEV_API_KEYS else f"<the API key of tenant {tenant}>"
    console.print(f"\n[green bold]ready[/] on {base_url}  (docs: {base_url}/docs)")
    console.print("try:\n")
    console.print(
        f"curl -s {base_url}/v1/answers -H 'Authorization: Bearer {shown}' "
        "-H 'Content-Type: application/json' "
        """-d '{"question": "What does edgecrew do?"}'""",
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"\nlogs in {supervisor.log_dir}; Ctrl-C stops")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
