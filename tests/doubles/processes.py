"""Targets for flow-run processes in tests: importable by the fork server's children."""

from __future__ import annotations

import time
from typing import Any


def sleep_for_a_minute(flow_run_id: str, flow_run: Any = None) -> None:
    time.sleep(60)


def record_the_run(flow_run_id: str, flow_run: Any = None) -> None:
    """Writes what the process was handed to the file its flow run's parameters name."""
    import json
    import os
    from pathlib import Path

    state = flow_run.state_type.value if flow_run.state_type else None
    record = {"id": flow_run_id, "pid": os.getpid(), "state": state}
    Path(flow_run.parameters["record"]).write_text(json.dumps(record))
