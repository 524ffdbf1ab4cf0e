"""Assemble the Worker's upload folder, build/worker/: edge/ (minus edge/local/) and shared/.

wrangler uploads every .py under `base_dir`, ignores .gitignore and does not follow
links, so it gets a folder holding exact copies of what the Worker needs and nothing
else. pywrangler's python_modules/ stays beside wrangler.toml, where wrangler looks for
it (it refuses one inside base_dir). Run by wrangler as the `[build]` command.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "worker"
PACKAGES = ("edge", "shared")
LEFT_OUT = {ROOT / "edge" / "local"}


def ignore(folder: str, names: list[str]) -> set[str]:
    return {
        name
        for name in names
        if name == "__pycache__"
        or not (name.endswith(".py") or (Path(folder) / name).is_dir())
        or Path(folder, name).resolve() in LEFT_OUT
    }


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, OUT / package, ignore=ignore)
    copied = sorted(p.relative_to(OUT).as_posix() for p in OUT.rglob("*.py"))
    print(f"build/worker: {len(copied)} modules from {', '.join(PACKAGES)}")


if __name__ == "__main__":
    main()
