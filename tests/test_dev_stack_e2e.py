"""`edgecrew dev` as a user runs it: real SmolLM2, real MiniLM, a real question, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from edge.settings import DEV_API_KEYS
from tests.support import free_port, port_is_open, processes_mentioning

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if needle in line:
            return seen
    pytest.fail(f"no {needle!r} from edgecrew dev; output:\n{''.join(seen)}")


def interrupt(process: subprocess.Popen[str]) -> str:
    """Ctrl-C, as a user would; the rest of its output. Kills it if it ignores Ctrl-C."""
    assert process.stdout is not None
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
        raise
    with process.stdout:
        return process.stdout.read()


def run_cli(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "edge.local.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=True)
    return done.stdout


def test_edgecrew_dev_answers_a_real_question_and_stops_cleanly(tmp_path: Path) -> None:
    port, llm_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECREW_")}
    env |= {"EDGECREW_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-m", "edge.local.cli", "dev", "--port", str(port),
         "--llm-port", str(llm_port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # so a failed test can still kill everything it started
    )  # fmt: skip
    try:
        output = "".join(wait_for_line(process, "ready on", timeout=240))
        assert "ingested" in output and "demo documents" in output
        key = DEV_API_KEYS.split(":", 1)[1]
        headers = {"Authorization": f"Bearer {key}"}
        base = f"http://127.0.0.1:{port}"
        question = {"question": "Which port does the local edge listen on?"}
        response = httpx.post(f"{base}/v1/answers", json=question, headers=headers, timeout=120)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model"] == "smollm2" and answer["answer"].strip()
        assert answer["citations"], "the demo corpus should ground this question"
        assert any("8787" in c["text"] for c in answer["citations"])
        assert answer["timings_ms"]["generate"] > 0

        with httpx.stream(
            "POST",
            f"{base}/v1/answers",
            json={**question, "stream": True},
            headers=headers,
            timeout=120,
        ) as streamed:
            lines = list(streamed.iter_lines())
        events = [line[7:] for line in lines if line.startswith("event: ")]
        assert events[-1] == "done" and "token" in events
        done = json.loads(next(line[6:] for line in reversed(lines) if line.startswith("data: ")))
        assert done["cached"] is True, "the same question again is served from the cache"

        notes = tmp_path / "Team Notes.md"
        notes.write_text("The staging database is called heron-7 and lives in Oslo.")
        ingested = run_cli(env, "ingest", str(notes), "--url", base, "--key", key)
        assert "team-notes: 1 chunks" in ingested
        question = "What is the staging database called?"
        assert "[1] team-notes#0" in run_cli(env, "ask", question, "--url", base, "--key", key)
    finally:
        farewell = interrupt(process)
    assert "stopped" in farewell
    assert process.returncode == 0
    assert not port_is_open(port) and not port_is_open(llm_port)
    assert processes_mentioning(f"--port {llm_port}") == []
    assert processes_mentioning(f"--port {port}") == []
