"""`edgecrew dev` as a user runs it: real SmolLM2, real MiniLM, real Prefect; Ctrl-C."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from edge.settings import DEV_API_KEYS
from tests.support import DevStack, WebhookReceiver, port_is_open, processes_mentioning

pytestmark = pytest.mark.e2e
KEY = DEV_API_KEYS.split(":", 1)[1]
HEADERS = {"Authorization": f"Bearer {KEY}"}


def run_cli(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "edge.local.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=True)
    return done.stdout


def test_edgecrew_dev_answers_runs_a_crew_and_stops_cleanly(tmp_path: Path) -> None:
    with DevStack.running(tmp_path) as stack, WebhookReceiver() as receiver:
        output = "".join(stack.output)
        assert "ingested" in output and "demo documents" in output
        base = stack.base_url
        question = {"question": "Which port does the local edge listen on?"}
        response = httpx.post(f"{base}/v1/answers", json=question, headers=HEADERS, timeout=120)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model"] == "smollm2" and answer["answer"].strip()
        assert answer["citations"], "the demo corpus should ground this question"
        assert any("8787" in c["text"] for c in answer["citations"])
        assert answer["timings_ms"]["generate"] > 0

        with httpx.stream("POST", f"{base}/v1/answers", json={**question, "stream": True},
                          headers=HEADERS, timeout=120) as streamed:  # fmt: skip
            lines = list(streamed.iter_lines())
        events = [line[7:] for line in lines if line.startswith("event: ")]
        assert events[-1] == "done" and "token" in events
        done = json.loads(next(line[6:] for line in reversed(lines) if line.startswith("data: ")))
        assert done["cached"] is True, "the same question again is served from the cache"

        notes = tmp_path / "Team Notes.md"
        notes.write_text("The staging database is called heron-7 and lives in Oslo.")
        ingested = run_cli(stack.env, "ingest", str(notes), "--url", base, "--key", KEY)
        assert "team-notes: 1 chunks" in ingested
        asked = run_cli(stack.env, "ask", "What is the staging database called?",
                        "--url", base, "--key", KEY)  # fmt: skip
        assert "[1] team-notes#0" in asked

        # A real crew on the real SmolLM2, through Prefect, ending in a signed webhook.
        job = {"crew": "summarize", "inputs": {"text": notes.read_text(), "sentences": 1},
               "webhook": {"url": receiver.url}}  # fmt: skip
        accepted = httpx.post(f"{base}/v1/jobs", json=job, headers=HEADERS, timeout=30)
        assert accepted.status_code == 202, accepted.text
        finished = stack.wait_for_job(accepted.json()["id"], KEY)
        assert finished["status"] == "succeeded", finished
        assert finished["result"]["output"].strip()
        hook = receiver.wait_for_event("job.succeeded")
        secret = httpx.get(f"{base}/v1/webhooks/secret", headers=HEADERS).json()["secret"]
        payload = Webhook(secret).verify(
            hook["body"], {k.lower(): v for k, v in hook["headers"].items()}
        )
        assert payload["data"]["id"] == finished["id"]

    assert "stopped" in stack.output[-1]
    assert stack.process.returncode == 0
    for port in (stack.port, stack.llm_port, stack.prefect_port):
        assert not port_is_open(port)
        assert processes_mentioning(f"--port {port}") == []
    assert processes_mentioning(str(tmp_path / "data")) == []
