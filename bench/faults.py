"""Fault suite: break one part of the running local stack and check every promise is kept.

    .venv/bin/python bench/faults.py [--only prefect,edge,worker,...] [--jobs 60]

Each scenario starts `edgecrew dev` as a user would (its own data dir and ports; the
crews use the scripted LLM so a job takes seconds), submits jobs the way a careful client
does (an Idempotency-Key per job, the same key again after a network error, 5xx or 429),
then SIGKILLs one part's whole process group mid-way:

- prefect:  the Prefect server, while jobs are being submitted;
- edge:     the edge, mid-request (clients retry with the same key);
- worker:   the cpu pool's worker group (worker, fork server, flow runs) mid-run;
- llm:      the local LLM server, while questions are being answered (real model);
- webhooks: not a kill: the clients' webhook receiver is down for 90 s while jobs end;
- waiting:  jobs of a crew with a `human_input` task: the worker group, then the edge,
            killed while they wait; both again while the answers are being posted;
- schedules: an interval schedule; the edge killed once, then twice in a row: every
            run Prefect started must be a job that ends with its webhook;
- redeliver: every second request to the receiver fails; each job's terminal webhook
            redelivered once it ends: one webhook id per event, whatever the tries;
- push:     the Prefect server killed under a steady trickle of jobs: the worker's
            claim latency before, while its event stream is down, and once it is back.

Reported per scenario: accepted (202s), ended (terminal status *and* its webhook
received), lost (accepted, not ended by the deadline), duplicated (a job with more than
one flow run, or one event delivered under two webhook ids; for waiting jobs also a
question asked or answered twice), and the time to recover
(the part healthy again; for webhooks, until every missed webhook arrived). Prints
markdown; docs/reliability.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edge.adapters.prefect_schedules import deployment_name  # noqa: E402
from edge.jobs.ids import scheduled_job_id  # noqa: E402
from edge.settings import DEV_API_KEYS  # noqa: E402
from tests.doubles.openai_server import FakeOpenAIServer  # noqa: E402
from tests.support import DevStack, processes_mentioning  # noqa: E402

KEY = DEV_API_KEYS.split(":", 1)[1]
HEADERS = {"Authorization": f"Bearer {KEY}"}
TERMINAL = {"succeeded", "failed", "cancelled"}
TERMINAL_EVENTS = ("job.succeeded", "job.failed", "job.cancelled")
STACK_ENV = {
    "EDGECREW_CREW_LLM_FACTORY": "tests.doubles.crew_llm:scripted_llm",
    "EDGECREW_ZOMBIE_SECONDS": "45",
    "EDGECREW_RECONCILE_SECONDS": "3",
    "EDGECREW_STALE_AFTER_SECONDS": "5",
    "EDGECREW_CLAIM_TIMEOUT_SECONDS": "10",
    "EDGECREW_RATE_LIMIT_PER_MINUTE": "0",
    "EDGECREW_SCHEDULE_MIN_INTERVAL_SECONDS": "5",
}


@dataclass
class Outcome:
    scenario: str
    accepted: int
    ended: int
    lost: int
    duplicated: int
    recovered_s: float
    notes: str = ""
    errors: int = 0  # answers a client got that it should never get: a 5xx other than 503


class Receiver:
    """Webhook receiver that can go down and come back on the same port; with
    `fail_every=N`, every Nth request is answered 503 (a flaky receiver). `received`
    holds what it acknowledged, `attempts` every request (with its arrival time)."""

    def __init__(self, fail_every: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.fail_every = fail_every
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook = {"id": self.headers["webhook-id"], "at": time.monotonic(), **body}
                with receiver._lock:
                    receiver.attempts.append(hook)
                    every = receiver.fail_every
                    failed = bool(every) and len(receiver.attempts) % every == 0
                    if not failed:
                        receiver.received.append(hook)
                self.send_response(503 if failed else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def hooks(self, *, attempts: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.attempts if attempts else self.received)

    def terminal_ids(self, *, attempts: bool = False) -> dict[str, set[str]]:
        """job id → the webhook ids of its terminal events (more than one: duplicated)."""
        ends: dict[str, set[str]] = {}
        for hook in self.hooks(attempts=attempts):
            if hook["type"] in TERMINAL_EVENTS:
                ends.setdefault(hook["data"]["id"], set()).add(hook["id"])
        return ends


async def submit_all(
    stack: DevStack,
    bodies: list[dict[str, Any]],
    *,
    concurrency: int,
    on_accepted: Callable[[int], None],
    errors: list[int] | None = None,
    key: str = "fault",
) -> list[str]:
    """POST every job like a careful client; the ids of those accepted (202). A 5xx other
    than 503 is retried too (a careful client would), and recorded in `errors`."""
    accepted: list[str] = []
    errors = errors if errors is not None else []
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, n: int, body: dict[str, Any]) -> None:
        headers = {**HEADERS, "Idempotency-Key": f"{key}-{n}"}
        async with gate:
            for _ in range(600):  # ~5 min of retries at most, then the job is not accepted
                try:
                    response = await client.post("/v1/jobs", json=body, headers=headers)
                except httpx.TransportError:
                    await asyncio.sleep(0.5)
                    continue
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                    on_accepted(len(accepted))
                    return
                if response.status_code >= 500 and response.status_code != 503:
                    errors.append(response.status_code)
                if response.status_code in (429, 503) or response.status_code >= 500:
                    await asyncio.sleep(float(response.headers.get("Retry-After", "0.5")))
                    continue
                raise RuntimeError(f"job {n} refused: {response.status_code} {response.text}")

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        await asyncio.gather(*(one(client, n, body) for n, body in enumerate(bodies)))
    return accepted


def job_body(
    receiver: Receiver, text: str, *, crew: str = "summarize", events: tuple[str, ...] = ()
) -> dict[str, Any]:
    hook = {"url": receiver.url, "events": [*events, *TERMINAL_EVENTS]}
    return {"crew": crew, "inputs": {"text": text}, "webhook": hook}


def kill_group(command_part: str, stack: DevStack | None = None) -> float:
    """SIGKILL the process group of the one process whose command line has this text
    (of `stack`'s parts when given: another stack may run on the machine)."""
    (pid,) = stack.processes(command_part) if stack else processes_mentioning(command_part)
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    return time.monotonic()


def wait_healthy(url: str, since: float, timeout: float = 300) -> float:
    """Seconds from `since` until `url` answers 200 (and stays up for a moment)."""
    deadline = time.monotonic() + timeout
    time.sleep(0.5)  # the kill lands first
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - since
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return float("nan")


def settle(
    stack: DevStack, receiver: Receiver, accepted: list[str], timeout: float
) -> tuple[int, int]:
    """Wait for every accepted job to end with its webhook; (ended, duplicated)."""
    deadline = time.monotonic() + timeout
    ended: set[str] = set()
    while time.monotonic() < deadline and len(ended) < len(accepted):
        hooks = receiver.terminal_ids()
        for job_id in accepted:
            if job_id in ended or job_id not in hooks:
                continue
            job = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=HEADERS, timeout=30)
            if job.status_code == 200 and job.json()["status"] in TERMINAL:
                ended.add(job_id)
        time.sleep(1.0)
    duplicated = sum(len(ids) > 1 for ids in receiver.terminal_ids().values())
    duplicated += sum(runs > 1 for runs in runs_per_job(stack, accepted).values())
    return len(ended), duplicated


def runs_per_job(stack: DevStack, job_ids: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(job_ids, 0)
    for run in flow_runs(stack):
        if (job_id := run["parameters"].get("job_id")) in counts:
            counts[job_id] += 1
    return counts


def flow_runs(stack: DevStack, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every flow run Prefect has (matching `query`, a `flow_runs` filter), page by page."""
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    found: list[dict[str, Any]] = []
    while True:
        body = {"limit": 200, "offset": len(found), **({"flow_runs": query} if query else {})}
        page = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).json()
        found += page
        if len(page) < 200:
            return found


def jobs_scenario(
    name: str, stack: DevStack, *, jobs: int, text: str, fault: Callable[[], float], health: str,
    settle_seconds: float = 420,
) -> Outcome:  # fmt: skip
    """Submit `jobs`, fire `fault` once a third are accepted, wait for every job to end.
    Recovery is timed from the kill by a thread of its own, while submissions go on."""
    recovered: list[float] = []
    watcher: list[threading.Thread] = []
    errors: list[int] = []
    with ExitStack() as cleanup:
        receiver = Receiver()
        cleanup.callback(receiver.down)

        def maybe_fault(count: int) -> None:
            if count == jobs // 3 and not watcher:
                killed = fault()
                timer = threading.Thread(
                    target=lambda: recovered.append(wait_healthy(health, killed))
                )
                timer.start()
                watcher.append(timer)

        bodies = [job_body(receiver, f"{text} job {n}") for n in range(jobs)]
        accepted = asyncio.run(
            submit_all(stack, bodies, concurrency=10, on_accepted=maybe_fault, errors=errors)
        )
        for timer in watcher:
            timer.join()
        ended, duplicated = settle(stack, receiver, accepted, settle_seconds)
    took = recovered[0] if recovered else float("nan")
    return Outcome(name, len(accepted), ended, len(accepted) - ended, duplicated, took,
                   errors=len(errors))  # fmt: skip


def worker_scenario(stack: DevStack, jobs: int) -> Outcome:
    """Crews of a few seconds; the cpu worker's whole group killed once four are running."""
    with ExitStack() as cleanup:
        receiver = Receiver()
        cleanup.callback(receiver.down)
        bodies = [job_body(receiver, f"SLEEP-CREW job {n}") for n in range(jobs)]
        accepted = asyncio.run(
            submit_all(stack, bodies, concurrency=10, on_accepted=lambda _: None)
        )
        api = f"http://127.0.0.1:{stack.prefect_port}/api"
        running = {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}
        for _ in range(120):
            if len(httpx.post(f"{api}/flow_runs/filter", json=running).json()) >= 4:
                break
            time.sleep(0.25)
        health = stack_worker_health(stack)  # the same port after a restart
        killed = kill_group("executor.worker --pool cpu", stack)
        recovered = wait_healthy(health, killed) if health else float("nan")
        ended, duplicated = settle(stack, receiver, accepted, 420)
        statuses = [httpx.get(f"{stack.base_url}/v1/jobs/{j}", headers=HEADERS).json()["status"]
                    for j in accepted]  # fmt: skip
    notes = f"{statuses.count('failed')} ended failed (Crashed: they were running), " \
            f"{statuses.count('succeeded')} succeeded"  # fmt: skip
    return Outcome("worker group mid-run", len(accepted), ended, len(accepted) - ended,
                   duplicated, recovered, notes)  # fmt: skip


def stack_worker_health(stack: DevStack) -> str | None:
    for pid in stack.processes("executor.worker --pool cpu"):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--healthcheck-port" in cmdline:
            port = int(cmdline[cmdline.index(b"--healthcheck-port") + 1])
            return f"http://127.0.0.1:{port}/health"
    return None


def webhooks_scenario(stack: DevStack, jobs: int, down_seconds: float = 90) -> Outcome:
    receiver = Receiver()
    receiver.down()  # before any job ends
    bodies = [job_body(receiver, f"webhooks job {n}") for n in range(jobs)]
    accepted = asyncio.run(submit_all(stack, bodies, concurrency=10, on_accepted=lambda _: None))
    time.sleep(down_seconds)
    receiver.up()
    back = time.monotonic()
    ended, duplicated = settle(stack, receiver, accepted, 600)
    receiver.down()
    return Outcome(f"webhook receiver down {down_seconds:.0f} s", len(accepted), ended,
                   len(accepted) - ended, duplicated, time.monotonic() - back,
                   "recovered = receiver back → every missed webhook delivered")  # fmt: skip


async def ask_loop(stack: DevStack, seconds: float, kill_after: float, fault: Callable[[], float]
                   ) -> tuple[dict[str, int], float]:  # fmt: skip
    """Questions one after another; the LLM killed part-way. Status counts, recovery."""
    statuses: dict[str, int] = {}
    killed_at: float | None = None
    recovered = float("nan")
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=120) as client:
        n = 0
        while time.monotonic() - start < seconds:
            if killed_at is None and time.monotonic() - start > kill_after:
                killed_at = fault()
            n += 1
            body = {"question": f"What does edgecrew do? ({n})"}  # each one misses the cache
            response = await client.post("/v1/answers", json=body, headers=HEADERS)
            key = str(response.status_code)
            if response.status_code == 503 and "retry-after" not in response.headers:
                key = "503 without Retry-After"
            statuses[key] = statuses.get(key, 0) + 1
            if killed_at is not None and response.status_code == 200 and recovered != recovered:
                recovered = time.monotonic() - killed_at
            if response.status_code != 200:
                await asyncio.sleep(0.5)
    return statuses, recovered


def llm_scenario(stack: DevStack) -> Outcome:
    statuses, recovered = asyncio.run(
        ask_loop(stack, 90, 15, lambda: kill_group(f"--port {stack.llm_port}", stack))
    )
    bad = sum(v for k, v in statuses.items() if k not in {"200", "503"})
    notes = f"questions, not jobs: accepted = asked, ended = answered 200; by status: {statuses}"
    answered = statuses.get("200", 0)
    asked = sum(statuses.values())
    return Outcome("LLM server mid-answer", asked, answered, -1, -1, recovered, notes, bad)


def eventually(check: Callable[[], Any], timeout: float, step: float = 0.5) -> Any:
    """`check()` once it is truthy, else its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(step)
    return found


def get_job(stack: DevStack, job_id: str) -> dict[str, Any]:
    """The job's view; a transport error (the edge restarting) is retried."""
    for _ in range(120):
        try:
            found = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=HEADERS, timeout=30)
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        if found.status_code < 500:
            return {"http_status": found.status_code, **found.json()}
        time.sleep(0.5)
    raise RuntimeError(f"job {job_id} unreadable")


def run_states(stack: DevStack, run_id: str) -> list[dict[str, Any]]:
    """A flow run's state history, oldest first."""
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    found = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30)
    return sorted(found.json(), key=lambda state: state["timestamp"])


def fault_in_background(fault: Callable[[], float], health: str, recovered: list[float]) -> None:
    """Fire `fault` now; time its part's recovery in a thread (appended to `recovered`)."""
    killed = fault()
    threading.Thread(target=lambda: recovered.append(wait_healthy(health, killed))).start()


def kill_edge(stack: DevStack) -> float:
    return kill_group(f"create_local_app --factory --host 127.0.0.1 --port {stack.port}", stack)


def kill_workers(stack: DevStack) -> float:
    return kill_group("executor.worker --pool cpu", stack)


def kill_prefect(stack: DevStack) -> float:
    return kill_group(f"server start --host 127.0.0.1 --port {stack.prefect_port}", stack)


# --- waiting jobs: a crew whose last task asks a person (`human_input`) -------------------

REVIEW_CREW = {
    "name": "review", "agents": ["summarizer"], "process": "sequential",
    "verbose": False, "memory": False, "inputs": {"sentences": 2},
    "tasks": [
        {"name": "draft_task", "description": "Summarize this text:\n\n{text}",
         "expected_output": "A summary.", "agent": "summarizer"},
        {"name": "review_task", "description": "Polish the summary of:\n\n{text}",
         "expected_output": "A polished summary.", "agent": "summarizer", "human_input": True},
    ],
}  # fmt: skip


def review_config(tmp: Path) -> tuple[str, ...]:
    """An edgecrew.toml with `summarize` and `review` (a JSON-first crew whose second task
    is `human_input`), both on the cpu pool."""
    crew = tmp / "crews" / "review"
    shutil.copytree(ROOT / "examples" / "crews" / "summarize" / "agents", crew / "agents")
    (crew / "crew.jsonc").write_text(json.dumps(REVIEW_CREW, indent=2))
    config = tmp / "edgecrew.toml"
    config.write_text(f"""
[crews.summarize]
source = "{ROOT / "examples" / "crews" / "summarize" / "crew.jsonc"}"
pool = "cpu"

[crews.review]
source = "{crew / "crew.jsonc"}"
pool = "cpu"

[pools.cpu]
concurrency = 4
""")
    return ("--config", str(config))


@dataclass
class Answers:
    """What a careful client saw answering: 202s per job and question, and 409s that came
    after a retry (the first try was taken, its answer lost with the edge)."""

    taken: dict[tuple[str, str], int]
    taken_before_retry: int = 0
    refused: int = 0
    errors: int = 0


async def answer_all(
    stack: DevStack, questions: list[tuple[str, str]], answers: Answers,
    on_taken: Callable[[int], None],
) -> None:  # fmt: skip
    """Approve each (job, question) like a careful client: the same answer again after a
    network error or a 5xx; a 409 after such a retry means the first try was taken."""
    gate = asyncio.Semaphore(3)

    async def one(client: httpx.AsyncClient, job_id: str, question: str) -> None:
        async with gate:
            retried = False
            for _ in range(600):
                try:
                    response = await client.post(
                        f"/v1/jobs/{job_id}/input",
                        headers=HEADERS,
                        json={"question": question, "approve": True},
                    )
                except httpx.TransportError:
                    retried = True
                    await asyncio.sleep(0.5)
                    continue  # fmt: skip
                if response.status_code == 202:
                    key = (job_id, question)
                    answers.taken[key] = answers.taken.get(key, 0) + 1
                    on_taken(sum(answers.taken.values()))
                    return
                if response.status_code == 409:
                    if retried:
                        answers.taken_before_retry += 1
                    else:
                        answers.refused += 1
                    return
                if response.status_code >= 500 and response.status_code != 503:
                    answers.errors += 1
                retried = True
                await asyncio.sleep(float(response.headers.get("Retry-After", "0.5")))

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        await asyncio.gather(*(one(client, job, question) for job, question in questions))


def asked_now(stack: DevStack, job_ids: list[str]) -> tuple[list[tuple[str, str]], int]:
    """The (job, question) pairs waiting for an answer, and how many jobs have ended."""
    waiting, ended = [], 0
    for job_id in job_ids:
        job = get_job(stack, job_id)
        if job["status"] == "waiting":
            waiting.append((job_id, job["input_request"]["id"]))
        ended += job["status"] in TERMINAL
    return waiting, ended


def ended_as(stack: DevStack, job_ids: list[str]) -> str:
    """How the jobs ended: `succeeded` 7, `failed (Crashed)` 3."""
    seen: dict[str, int] = {}
    for job_id in job_ids:
        job = get_job(stack, job_id)
        kind = f"{job['status']} ({job['error']['kind']})" if job.get("error") else job["status"]
        seen[kind] = seen.get(kind, 0) + 1
    return ", ".join(f"{kind} {n}" for kind, n in sorted(seen.items()))


def quiet(stack: DevStack, job_ids: list[str]) -> bool:
    """Every job waits for an answer or has ended."""
    waiting, ended = asked_now(stack, job_ids)
    return len(waiting) + ended >= len(job_ids)


def waiting_scenario(stack: DevStack, jobs: int) -> Outcome:
    """Jobs that ask a person. While most wait: the worker group killed, then the edge.
    Then every question approved, the worker group killed after a third of the answers
    and the edge after two thirds. Every job must end with its webhook; no question may
    be asked twice (a Prefect run suspended twice, or two webhook ids for one question)
    nor answered twice (two 202s)."""
    recovered: list[float] = []
    answers = Answers(taken={})
    worker_health = stack_worker_health(stack)
    assert worker_health
    edge_health = f"{stack.base_url}/healthz"
    with ExitStack() as cleanup:
        receiver = Receiver()
        cleanup.callback(receiver.down)
        bodies = [job_body(receiver, f"waiting job {n}", crew="review", events=("job.waiting",))
                  for n in range(jobs)]  # fmt: skip
        accepted = asyncio.run(
            submit_all(stack, bodies, concurrency=10, on_accepted=lambda _: None)
        )
        eventually(lambda: len(asked_now(stack, accepted)[0]) >= max(1, len(accepted) // 2), 240)
        recovered.append(wait_healthy(worker_health, kill_workers(stack)))
        recovered.append(wait_healthy(edge_health, kill_edge(stack)))
        for round_ in range(3):  # a job asking again (it should not) is answered again
            eventually(lambda: quiet(stack, accepted), 300)
            questions = asked_now(stack, accepted)[0]
            if not questions:
                break
            faults = (
                {
                    len(questions) // 3: (kill_workers, worker_health),
                    2 * len(questions) // 3: (kill_edge, edge_health),
                }
                if round_ == 0
                else {}
            )

            def maybe_fault(count: int, faults: dict[int, Any] = faults) -> None:
                if (fault := faults.pop(count, None)) is not None:
                    fault_in_background(lambda: fault[0](stack), fault[1], recovered)

            asyncio.run(answer_all(stack, questions, answers, maybe_fault))
            time.sleep(5)
        ended, duplicated = settle(stack, receiver, accepted, 420)
        asked: dict[str, list[str]] = {}  # job → the ids of its job.waiting webhooks
        for hook in receiver.hooks():
            if hook["type"] == "job.waiting":
                question = hook["data"]["input_request"]["id"]
                asked.setdefault(f"{hook['data']['id']}:{question}", []).append(hook["id"])
        suspended = {
            run["parameters"]["job_id"]: sum(
                state["name"] == "Suspended" for state in run_states(stack, run["id"])
            )
            for run in flow_runs(stack) if run["parameters"].get("job_id") in set(accepted)
        }  # fmt: skip
        statuses = ended_as(stack, accepted)
    asked_twice = sum(n > 1 for n in suspended.values())
    asked_twice += sum(len(set(ids)) > 1 for ids in asked.values())
    answered_twice = sum(n > 1 for n in answers.taken.values())
    notes = (f"ended {statuses}; "
             f"{len(answers.taken)} answers taken (202), {answers.taken_before_retry} taken by "
             f"a try whose answer was lost (409 on the retry), {answers.refused} refused; "
             f"asked twice {asked_twice}, answered twice {answered_twice}; suspended per job "
             f"{sorted(suspended.values())}; recovered: workers {recovered[0]:.1f} s, edge "
             f"{recovered[1]:.1f} s while waiting; "
             + " and ".join(f"{r:.1f} s" for r in sorted(recovered[2:]))
             + " (edge, workers) while answering")  # fmt: skip
    return Outcome("worker group, edge: jobs waiting / answers posted", len(accepted), ended,
                   len(accepted) - ended, duplicated + asked_twice + answered_twice,
                   max(recovered), notes, answers.errors)  # fmt: skip


# --- scheduled runs while the edge dies -------------------------------------------------


def schedules_scenario(
    stack: DevStack, bursts: tuple[int, ...] = (1, 2), interval: int = 6
) -> Outcome:
    """An interval schedule; the edge killed while Prefect's scheduler makes runs: once,
    then (20 s later) twice in a row, killed again as soon as it is back, for an outage
    longer than the flow's retry delay (5 s). Every run that started must be a job that
    ends with its webhook; a started run without a job is counted lost (docs/schedules.md:
    a run whose two tries both find the edge away makes no job)."""
    recovered: list[float] = []
    tenant = DEV_API_KEYS.split(":", 1)[0]
    with ExitStack() as cleanup:
        receiver = Receiver()
        cleanup.callback(receiver.down)
        body = {"crew": "summarize", "inputs": {"text": "scheduled run"}, "overlap": "allow",
                "interval_seconds": interval,
                "webhook": {"url": receiver.url, "events": list(TERMINAL_EVENTS)}}  # fmt: skip
        headers = {**HEADERS, "Idempotency-Key": "fault-schedule"}
        made = httpx.post(f"{stack.base_url}/v1/schedules", json=body, headers=headers,
                          timeout=30)  # fmt: skip
        assert made.status_code == 201, made.text
        schedule = made.json()
        for burst in bursts:
            time.sleep(20)
            killed = time.monotonic()
            for _ in range(burst):
                wait_healthy(f"{stack.base_url}/healthz", kill_edge(stack))
            recovered.append(time.monotonic() - killed)
        time.sleep(15)
        paused = httpx.post(f"{stack.base_url}{schedule['urls']['self']}/pause",
                            headers=HEADERS, timeout=30)  # fmt: skip
        assert paused.status_code == 200, paused.text
        api = f"http://127.0.0.1:{stack.prefect_port}/api"
        name = deployment_name(schedule["id"])
        deployment = httpx.get(f"{api}/deployments/name/run-crew-job/{name}", timeout=30).json()
        query = {"deployment_id": {"any_": [deployment["id"]]}}
        ongoing = {**query, "state": {"type": {"any_": ["PENDING", "RUNNING", "CANCELLING"]}}}
        eventually(lambda: not flow_runs(stack, ongoing), 180, step=2)
        runs = flow_runs(stack, query)
        started = [run for run in runs if run["start_time"]]
        jobs = {scheduled_job_id(tenant, run["id"]): run for run in started}
        ended, duplicated = settle(stack, receiver, list(jobs), 300)
        retried = sum(
            any(state["name"] == "AwaitingRetry" for state in run_states(stack, run["id"]))
            for run in started
        )
        without = [
            run for job_id, run in jobs.items() if get_job(stack, job_id)["http_status"] == 404
        ]
        delete = httpx.delete(f"{stack.base_url}{schedule['urls']['self']}", headers=HEADERS)
    orphans = "; ".join(f"{run['name']} {run['state']['type']} ({run['state']['message']})"[:160]
                        for run in without)  # fmt: skip
    notes = (f"{len(runs)} runs made, {len(started)} started, {len(without)} started runs "
             f"without a job{': ' + orphans if orphans else ''}, {retried} retried by "
             f"Prefect; edge killed {' then '.join(f'{b}x' for b in bursts)}, down "
             + ", ".join(f"{r:.1f} s" for r in recovered)
             + f"; delete {delete.status_code}")  # fmt: skip
    return Outcome(f"edge under an interval schedule ({interval} s)", len(started),
                   ended, len(started) - ended, duplicated, max(recovered), notes)  # fmt: skip


# --- redelivery to a flaky receiver ------------------------------------------------------


async def redeliver_all(stack: DevStack, job_ids: list[str]) -> dict[str, str]:
    """Once each job has ended, ask for its terminal webhook again (a careful client:
    retries on 429 after `Retry-After`, on 409 before the first try was made, on 5xx).
    job id → the message id the redelivery carries."""
    queued: dict[str, str] = {}

    async def one(client: httpx.AsyncClient, job_id: str) -> None:
        for _ in range(600):
            try:
                job = (await client.get(f"/v1/jobs/{job_id}", headers=HEADERS)).json()
                if job["status"] not in TERMINAL:
                    await asyncio.sleep(0.5)
                    continue
                response = await client.post(f"/v1/jobs/{job_id}/deliveries/redeliver",
                                             json={"event": f"job.{job['status']}"},
                                             headers=HEADERS)  # fmt: skip
            except httpx.TransportError:
                await asyncio.sleep(0.5)
                continue
            if response.status_code == 202:
                queued[job_id] = response.json()["message_id"]
                return
            await asyncio.sleep(float(response.headers.get("Retry-After", "0.5")))

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        await asyncio.gather(*(one(client, job_id) for job_id in job_ids))
    return queued


def redeliver_scenario(stack: DevStack, jobs: int) -> Outcome:
    """Jobs end while every second request to the receiver fails (503); each job's
    terminal webhook is redelivered as soon as the job ends, while its original may still
    be retrying. Every request of one job's terminal event must carry one webhook id, the
    one the redelivery named; the job's delivery log must show the redelivery."""
    with ExitStack() as cleanup:
        receiver = Receiver(fail_every=2)
        cleanup.callback(receiver.down)
        bodies = [job_body(receiver, f"redeliver job {n}") for n in range(jobs)]
        accepted = asyncio.run(
            submit_all(stack, bodies, concurrency=10, on_accepted=lambda _: None)
        )
        started = time.monotonic()
        queued = asyncio.run(redeliver_all(stack, accepted))
        ended, duplicated = settle(stack, receiver, accepted, 420)
        took = time.monotonic() - started
        time.sleep(5)  # the last redeliveries land
        ids = receiver.terminal_ids(attempts=True)
        tries = [h for h in receiver.hooks(attempts=True) if h["type"] in TERMINAL_EVENTS]
        arrived = {job_id: sum(h["data"]["id"] == job_id for h in tries) for job_id in accepted}
        wrong_id = sum(ids.get(job_id, set()) != {message} for job_id, message in queued.items())
        logged = 0
        for job_id, message in queued.items():
            log = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}/deliveries", headers=HEADERS)
            logged += any(d["redelivery"] and d["message_id"] == message
                          for d in log.json()["deliveries"])  # fmt: skip
    notes = (
        f"{len(queued)} redeliveries queued (202), {logged} in the delivery log as "
        f"`redelivery: true` with the original message id; requests per job's terminal "
        f"event {sorted(arrived.values())}, {wrong_id} jobs with a webhook id other than "
        f"the redelivered one; recovered = first redelivery asked → every job ended"
    )
    return Outcome("flaky receiver (every 2nd request 503) + redelivery", len(accepted), ended,
                   len(accepted) - ended, duplicated + wrong_id, took, notes)  # fmt: skip


# --- the push subscriber across a Prefect restart ---------------------------------------


@dataclass
class Start:
    job_id: str
    push: bool  # the worker said its event stream was connected when the job was sent
    phase: str


def claim_latency(stack: DevStack, run_id: str) -> float | None:
    """Seconds from the run's `Scheduled` state to the worker's claim (`Pending`)."""
    states = run_states(stack, run_id)
    times = {s["type"]: s["timestamp"] for s in reversed(states)}  # the first of each type
    if "SCHEDULED" not in times or "PENDING" not in times:
        return None
    return (parse_time(times["PENDING"]) - parse_time(times["SCHEDULED"])).total_seconds()


def parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def push_scenario(stack: DevStack, jobs: int, gap: float = 1.5) -> Outcome:
    """Jobs sent one every `gap` s; Prefect's server killed (the supervisor restarts it).
    Per job, how long Prefect's run waited for the worker's claim (Scheduled → Pending),
    before the kill, after Prefect is back while the worker's event stream is still down
    (polling), and once the worker's `/health` says `push` again."""
    health = stack_worker_health(stack)
    assert health
    push_log: list[tuple[float, bool]] = []
    stop = threading.Event()

    def push_now() -> bool:
        try:
            return bool(httpx.get(health, timeout=2).json().get("push"))
        except (httpx.HTTPError, ValueError):
            return False

    def watch() -> None:
        while not stop.is_set():
            push_log.append((time.monotonic(), push_now()))
            time.sleep(0.2)

    starts: list[Start] = []
    with ExitStack() as cleanup:
        receiver = Receiver()
        cleanup.callback(receiver.down)
        cleanup.callback(stop.set)
        push_log.append((time.monotonic(), eventually(push_now, 60)))
        threading.Thread(target=watch, daemon=True).start()

        def send(phase: str) -> None:
            push = push_log[-1][1] if push_log else False
            body = job_body(receiver, f"push {phase} job {len(starts)}")
            (job_id,) = asyncio.run(submit_all(stack, [body], concurrency=1,
                                               on_accepted=lambda _: None,
                                               key=f"fault-push-{len(starts)}"))  # fmt: skip
            starts.append(Start(job_id, push, phase))
            time.sleep(gap)

        for _ in range(max(3, jobs // 2)):
            send("before")
        killed = kill_prefect(stack)
        prefect_back = wait_healthy(f"http://127.0.0.1:{stack.prefect_port}/api/health", killed)
        back_at = killed + prefect_back
        while time.monotonic() - back_at < 120 and not push_log[-1][1]:
            send("after, push down")
        for _ in range(max(3, jobs // 2)):
            send("after, push back")
        ended, duplicated = settle(stack, receiver, [s.job_id for s in starts], 420)
        stop.set()
        push_back = next((at - back_at for at, on in push_log if at > back_at and on), None)
        run_of = {run["parameters"].get("job_id"): run["id"] for run in flow_runs(stack)}
        latency: dict[str, list[float]] = {}
        for start in starts:
            took = claim_latency(stack, run_of[start.job_id]) if start.job_id in run_of else None
            if took is not None:
                latency.setdefault(f"{start.phase} (push {'on' if start.push else 'off'})",
                                   []).append(took)  # fmt: skip
    summary = "; ".join(
        f"{phase}: median {statistics.median(v) * 1000:.0f} ms, max "
        f"{max(v) * 1000:.0f} ms ({len(v)})"
        for phase, v in latency.items()
    )
    reconnect = f"{push_back:.1f} s" if push_back is not None else "never (in 120 s)"
    notes = (
        f"claim latency (Scheduled → Pending) {summary}; Prefect back in "
        f"{prefect_back:.1f} s, the worker's push again {reconnect} after that"
    )
    return Outcome("Prefect server: push subscriber", len(starts), ended, len(starts) - ended,
                   duplicated, prefect_back + (push_back or float("nan")), notes)  # fmt: skip


Scenario = Callable[[DevStack, int], Outcome]
#: Extra `edgecrew dev` arguments a scenario needs, made in its temporary folder.
Setup = Callable[[Path], tuple[str, ...]]
SCENARIOS: dict[str, tuple[Scenario, bool, Setup | None]] = {  # name → (run, real LLM?, setup)
    "prefect": (lambda s, n: jobs_scenario(
        "Prefect server during submissions", s, jobs=n, text="prefect",
        fault=lambda: kill_prefect(s),
        health=f"http://127.0.0.1:{s.prefect_port}/api/health"), False, None),
    "edge": (lambda s, n: jobs_scenario(
        "edge mid-request", s, jobs=n, text="edge", fault=lambda: kill_edge(s),
        health=f"{s.base_url}/healthz"), False, None),
    "worker": (lambda s, n: worker_scenario(s, max(8, n // 5)), False, None),
    "llm": (lambda s, n: llm_scenario(s), True, None),
    "webhooks": (lambda s, n: webhooks_scenario(s, max(5, n // 6)), False, None),
    "waiting": (lambda s, n: waiting_scenario(s, max(6, n // 2)), False, review_config),
    "schedules": (lambda s, n: schedules_scenario(s), False, None),
    "redeliver": (lambda s, n: redeliver_scenario(s, max(6, n // 2)), False, None),
    "push": (lambda s, n: push_scenario(s, n), False, None),
}  # fmt: skip


def run(name: str, jobs: int) -> Outcome:
    scenario, real_llm, setup = SCENARIOS[name]
    with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as tmp, ExitStack() as stack_cm:
        env = dict(STACK_ENV)
        if not real_llm:  # the crews use the scripted LLM; the edge still needs a model
            env["EDGECREW_LLM_BASE_URL"] = stack_cm.enter_context(FakeOpenAIServer()).base_url
        args: tuple[str, ...] = () if real_llm else ("--no-demo",)
        args += setup(Path(tmp)) if setup else ()
        stack = stack_cm.enter_context(DevStack.running(Path(tmp), *args, env=env))
        started = time.monotonic()
        outcome = scenario(stack, jobs)
        outcome.notes = (outcome.notes + f"; {time.monotonic() - started:.0f} s").lstrip("; ")
        return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--jobs", type=int, default=60)
    args = parser.parse_args()
    outcomes = []
    for name in args.only.split(","):
        print(f"… {name}", file=sys.stderr, flush=True)
        outcomes.append(run(name, args.jobs))
        print(outcomes[-1], file=sys.stderr, flush=True)
    print("| fault | accepted | ended | lost | duplicated | 5xx (not 503) | recovered in | notes |")
    print("|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        lost, dup = ("n/a", "n/a") if o.lost < 0 else (o.lost, o.duplicated)
        print(f"| {o.scenario} | {o.accepted} | {o.ended} | {lost} | {dup} | {o.errors} "
              f"| {o.recovered_s:.1f} s | {o.notes} |")  # fmt: skip


if __name__ == "__main__":
    main()
