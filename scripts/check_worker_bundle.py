"""CI check: `wrangler deploy --dry-run --outdir`, offline, then assertions on the upload.

The outdir holds one file per uploaded module under its upload name (wrangler writes no
manifest), and the bindings appear only in wrangler's output, so both are read from there.
Fails when the upload is not exactly edge/ (minus edge/local/) + shared/, when a binding
that the app needs is not declared, or when wrangler warns about the config.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODE = ROOT / ".tools/node_modules/node/bin/node"
WRANGLER = ROOT / ".tools/node_modules/wrangler/bin/wrangler.js"
OUTDIR = ROOT / "build" / "dry-run"  # beside base_dir (build/worker), never inside it
PACKAGES = ("edge", "shared")
LOCAL_ONLY = ("edge/local/",)
REQUIRED_BINDINGS = {"AI", "VECTORIZE", "KV", "WEBHOOKS", "RATE_LIMITER", "JOBS"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def expected_modules(config: dict) -> set[str]:
    """What should be uploaded, derived from the source tree; main goes up as its basename."""
    main = Path(config["main"]).relative_to(config["base_dir"]).as_posix()
    names = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    names = {n for n in names if not n.startswith(LOCAL_ONLY)}
    return (names - {main}) | {Path(main).name}


def declared_bindings(config: dict) -> set[str]:
    names = set(config.get("vars", {}))
    if "ai" in config:
        names.add(config["ai"]["binding"])
    for section in ("vectorize", "kv_namespaces", "d1_databases", "r2_buckets"):
        names.update(binding["binding"] for binding in config.get(section, []))
    names.update(p["binding"] for p in config.get("queues", {}).get("producers", []))
    names.update(limiter["name"] for limiter in config.get("ratelimits", []))
    names.update(d["name"] for d in config.get("durable_objects", {}).get("bindings", []))
    return names


def fail(message: str) -> int:
    print(f"check_worker_bundle: FAIL: {message}", file=sys.stderr)
    return 1


def main() -> int:
    config = tomllib.loads((ROOT / "wrangler.toml").read_text())
    shutil.rmtree(OUTDIR, ignore_errors=True)  # wrangler never removes stale outdir files
    env = {**os.environ, "WRANGLER_SEND_METRICS": "false", "CI": "true"}
    process = subprocess.run(  # noqa: S603 - fixed argv
        [str(NODE), str(WRANGLER), "deploy", "--dry-run", "--outdir", str(OUTDIR)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    log = ANSI.sub("", process.stdout + process.stderr)
    print(log)
    if process.returncode != 0:
        return fail(f"wrangler exited with {process.returncode}")
    if "[WARNING]" in log:
        return fail("wrangler warned about the configuration")

    files = {p.relative_to(OUTDIR).as_posix() for p in OUTDIR.rglob("*") if p.is_file()}
    files.discard("README.md")  # written by --outdir, not uploaded
    own = {f for f in files if not f.startswith("python_modules/")}
    expected = expected_modules(config)
    if own != expected:
        return fail(
            f"upload differs: missing {sorted(expected - own)}, extra {sorted(own - expected)}"
        )
    shown = set(re.findall(r"^env\.(\w+)", log, flags=re.MULTILINE))
    if missing := (REQUIRED_BINDINGS | declared_bindings(config)) - shown:
        return fail(f"bindings not declared or not recognised: {sorted(missing)}")
    print(
        f"check_worker_bundle: OK: {len(own)} modules (edge + shared, no local adapters, "
        f"executor or tests), bindings {sorted(shown)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
