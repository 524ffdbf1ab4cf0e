"""Pin the Worker's packages for its runtime: `worker.lock`, versions and sha256 hashes.

The Worker runs on Pyodide 314 (Python 3.14, the Workers runtime from compatibility date
2026-09-08). This resolves pyproject.toml's base dependencies (the Worker's packages) for
that platform from PyPI, where pydantic-core publishes
`pyemscripten_2026_0_wasm32` wheels and the rest are pure Python, and writes one
`name==version --hash=sha256:...` line per wheel. `make tools` downloads exactly that set
(`pip download --require-hashes`), and the real-Pyodide tests install it. It is what the
tests run. pywrangler resolves on its own at deploy, with uv, PyPI and Pyodide's index;
its command needs a Pyodide interpreter that cannot be had offline
(docs/deploy-cloudflare.md). pip evaluates dependency markers for this machine, not the
target; none of the set's markers depend on the platform today.

    .venv/bin/python scripts/lock_worker_packages.py                  # re-pin; commit it
    .venv/bin/python scripts/lock_worker_packages.py --download DIR   # fetch the pinned set
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "worker.lock"
#: The runtime's Python; pywrangler derives the same from wrangler.toml (the bundle check asks it).
PYTHON_VERSION = "3.14"
#: pip's description of the Workers runtime's interpreter (Pyodide 314.0.x).
PLATFORM_ARGS = [
    "--only-binary=:all:",
    "--platform", "pyemscripten_2026_0_wasm32",
    "--platform", "any",
    "--python-version", PYTHON_VERSION,
    "--implementation", "cp",
    "--abi", "cp314",
    "--abi", "none",
]  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["--download"]:
        if len(sys.argv) != 3:
            sys.exit("usage: lock_worker_packages.py [--download DIR]")
        download(Path(sys.argv[2]))
    else:
        lock()


def download(folder: Path) -> None:
    """Exactly the locked wheels, checked against their hashes, into `folder`."""
    subprocess.run(  # noqa: S603 - pip, with our own pinned arguments
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes",
         *PLATFORM_ARGS, "-d", str(folder), "-r", str(LOCK)],
        check=True,
    )  # fmt: skip


def lock() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(  # noqa: S603 - pip, with our own pinned arguments
            [sys.executable, "-m", "pip", "download", "-q", *PLATFORM_ARGS, "-d", folder,
             *dependencies],
            check=True,
        )  # fmt: skip
        lines = [_line(wheel) for wheel in sorted(Path(folder).glob("*.whl"))]
    header = (
        "# The Worker's packages for Pyodide 314 (Python 3.14), from pyproject.toml's base\n"
        "# dependencies: scripts/lock_worker_packages.py writes this file, `make tools`\n"
        "# downloads exactly these wheels. Do not edit by hand.\n"
    )
    LOCK.write_text(header + "\n".join(sorted(lines)) + "\n")
    print(f"{LOCK.relative_to(ROOT)}: {len(lines)} packages")


def pins(lock: Path = LOCK) -> dict[str, tuple[str, str]]:
    """The lock as {normalized name: (version, sha256)}."""
    pinned = {}
    for line in lock.read_text().splitlines():
        if line and not line.startswith("#"):
            spec, _, digest = line.partition(" --hash=sha256:")
            name, _, version = spec.partition("==")
            pinned[normalize(name)] = (version, digest)
    return pinned


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (`pydantic_core` is `pydantic-core`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _line(wheel: Path) -> str:
    name, version = wheel.name.split("-")[:2]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return f"{normalize(name)}=={version} --hash=sha256:{digest}"


if __name__ == "__main__":
    main()
