"""Targets for flow-run processes in tests: importable by the fork server's children."""

from __future__ import annotations

import time


def sleep_for_a_minute(flow_run_id: str) -> None:
    time.sleep(60)
