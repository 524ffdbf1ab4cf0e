"""Fault suite: break one part of the running local stack and check every promise is kept.

    .venv/bin/python bench/faults.py [--only prefect,edge,worker,llm,webhooks] [--jobs 60]

Each scenario starts `edgecrew dev` as a user would (its own data dir and ports; the
crews use the scripted LLM so a job takes seconds), submits jobs the way a careful client
does (an Idempotency-Key per job, the same key again after a network error, 5xx or 429),
then SIGKILLs one part's whole process group mid-way:

- prefect:  the Prefect server, while jobs are being submitted;
- edge:     the edge, mid-request (clients retry with the same key);
- worker:   the cpu pool's worker group (worker, fork server, flow runs) mid-run;
- llm:      the local LLM server, while questions are being answered (real model);
- webhooks: not a kill: the clients' webhook receiver is down for 90 s while jobs end.

Reported per scenario: accepted (202s), ended (terminal status *and* its webhook
received), lost (accepted, not ended by the deadline), duplicated (a job with more than
one flow run, or one event delivered under two webhook ids), and the time to recover
(the part healthy again; for webhooks, until every missed webhook arrived). Prints
markdown; docs/reliability.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edge.settings import DEV_API_KEYS  # noqa: E402
from tests.doubles.openai_server import FakeOpenAIServer  # noqa: E402
from tests.support import DevStack, processes_mentioning  # noqa: E402

KEY = DEV_API_KEYS.split(":", 1)[1]
HEADERS = {"Authorization": f"Bearer {KEY}"}
TERMINAL = {"succeeded", "failed", "cancelled"}
STACK_ENV = {
    "EDGECREW_CREW_LLM_FACTORY": "tests.doubles.crew_llm:scripted_llm",
    "EDGECREW_ZOMBIE_SECONDS": "45",
    "EDGECREW_RECONCILE_SECONDS": "3",
    "EDGECREW_STALE_AFTER_SECONDS": "5",
    "EDGECREW_CLAIM_TIMEOUT_SECONDS": "10",
    "EDGECREW_RATE_LIMIT_PER_MINUTE": "0",
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
    """Webhook receiver that can go down and come back on the same port."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
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
                with receiver._lock:
                    receiver.received.append({"id": self.headers["webhook-id"], **body})
                self.send_response(204)
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

    def terminal_ids(self) -> dict[str, set[str]]:
        """job id → the webhook ids of its terminal events (more than one: duplicated)."""
        with self._lock:
            hooks = list(self.received)
        ends: dict[str, set[str]] = {}
        for hook in hooks:
            if hook["type"] in {"job.succeeded", "job.failed", "job.cancelled"}:
                ends.setdefault(hook["data"]["id"], set()).add(hook["id"])
        return ends


async def submit_all(
    stack: DevStack,
    bodies: list[dict[str, Any]],
    *,
    concurrency: int,
    on_accepted: Callable[[int], None],
    errors: list[int] | None = None,
) -> list[str]:
    """POST every job like a careful client; the ids of those accepted (202). A 5xx other
    than 503 is retried too (a careful client would), and recorded in `errors`."""
    accepted: list[str] = []
    errors = errors if errors is not None else []
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, n: int, body: dict[str, Any]) -> None:
        headers = {**HEADERS, "Idempotency-Key": f"fault-{n}"}
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


def job_body(receiver: Receiver, text: str) -> dict[str, Any]:
    events = ["job.succeeded", "job.failed", "job.cancelled"]
    return {"crew": "summarize", "inputs": {"text": text},
            "webhook": {"url": receiver.url, "events": events}}  # fmt: skip


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
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    counts = dict.fromkeys(job_ids, 0)
    offset = 0
    while True:
        page = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200, "offset": offset},
                          timeout=30).json()  # fmt: skip
        for run in page:
            if (job_id := run["parameters"].get("job_id")) in counts:
                counts[job_id] += 1
        if len(page) < 200:
            return counts
        offset += 200


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


Scenario = Callable[[DevStack, int], Outcome]
SCENARIOS: dict[str, tuple[Scenario, bool]] = {  # name → (run, needs the real local LLM)
    "prefect": (lambda s, n: jobs_scenario(
        "Prefect server during submissions", s, jobs=n, text="prefect",
        fault=lambda: kill_group(f"server start --host 127.0.0.1 --port {s.prefect_port}", s),
        health=f"http://127.0.0.1:{s.prefect_port}/api/health"), False),
    "edge": (lambda s, n: jobs_scenario(
        "edge mid-request", s, jobs=n, text="edge",
        fault=lambda: kill_group(f"create_local_app --factory --host 127.0.0.1 --port {s.port}", s),
        health=f"{s.base_url}/healthz"), False),
    "worker": (lambda s, n: worker_scenario(s, max(8, n // 5)), False),
    "llm": (lambda s, n: llm_scenario(s), True),
    "webhooks": (lambda s, n: webhooks_scenario(s, max(5, n // 6)), False),
}  # fmt: skip


def run(name: str, jobs: int) -> Outcome:
    scenario, real_llm = SCENARIOS[name]
    with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as tmp, ExitStack() as stack_cm:
        env = dict(STACK_ENV)
        if not real_llm:  # the crews use the scripted LLM; the edge still needs a model
            env["EDGECREW_LLM_BASE_URL"] = stack_cm.enter_context(FakeOpenAIServer()).base_url
        args = () if real_llm else ("--no-demo",)
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
