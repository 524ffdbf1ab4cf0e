"""Helpers for tests that start real processes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from edge.local.processes import free_port

__all__ = ["free_port", "port_is_open", "processes_mentioning"]


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (read from /proc, no extra packages)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found
