"""A tiny HTTP service for supervisor tests: `python tiny_service.py PORT NAME EVENTS`.

Answers 200 on every GET; on SIGTERM it appends `NAME term` to EVENTS, takes a moment to
shut down (as a draining worker does), appends `NAME exit` and exits. With TINY_CHILD set
it starts a child in its process group (as a worker's flow runs are) and writes the
child's pid there; while the file TINY_WEDGE names exists it stops answering (wedged)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any


def main() -> None:
    port, name, events = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

    if child_file := os.environ.get("TINY_CHILD"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(child_file).write_text(str(child.pid))
    wedge = os.environ.get("TINY_WEDGE")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            while wedge and Path(wedge).exists():
                time.sleep(0.1)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", port), Handler)

    def stop(*_: object) -> None:
        with events.open("a") as log:
            log.write(f"{name} term\n")
        time.sleep(0.3)
        with events.open("a") as log:
            log.write(f"{name} exit\n")
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"{name} serving on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
