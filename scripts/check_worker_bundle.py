"""CI check: what `pywrangler deploy` would upload, offline, asserted file by file.

pywrangler's deploy is its sync, which fills python_modules/, then `npx --yes wrangler
deploy` (cli.py). Sync cannot run here, so python_modules/ is laid out from the locked
wheels as sync lays it out (pywrangler_layout.py). The pinned wrangler then does
`deploy --dry-run --outdir`. That writes one file per uploaded module under its upload
name (wrangler writes no manifest), and the bindings and sizes appear only in wrangler's
output, so all of it is read from there. The check fails when:
- pywrangler's own code derives another Python or vendor folder from this repo's config;
- the app modules are not exactly edge/ (minus edge/local/) + shared/;
- the vendored files are not exactly the laid-out packages, with their names and versions;
- anything that must not ship is uploaded (bytecode, the executor, tests, local mode);
- the upload is over the Workers size limits, a binding is missing, or wrangler warns.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from email.parser import HeaderParser
from pathlib import Path

import pywrangler_layout
from lock_worker_packages import PYTHON_VERSION, normalize

ROOT = Path(__file__).resolve().parents[1]
NODE = ROOT / ".tools/node_modules/node/bin/node"
WRANGLER = ROOT / ".tools/node_modules/wrangler/bin/wrangler.js"
OUTDIR = ROOT / "build" / "dry-run"  # beside base_dir (build/worker), never inside it
VENDOR = ROOT / "python_modules"  # wrangler reads it beside wrangler.toml
PACKAGES = ("edge", "shared")
LOCAL_ONLY = ("edge/local/",)
NEVER_SHIPPED = ("edge/local/", "executor/", "tests/", "scripts/", ".venv")
REQUIRED_BINDINGS = {"AI", "VECTORIZE", "KV", "WEBHOOKS", "RATE_LIMITER", "JOBS"}
# Cloudflare's Worker size limits, compressed: Workers Paid 10 MB, Free 3 MB. wrangler
# warns from 64 MiB uncompressed (MAX_UNCOMPRESSED_SIZE_BYTES in its bundle reporter).
PAID_LIMIT_GZIP = 10_000_000
FREE_LIMIT_GZIP = 3_000_000
LIMIT_UNCOMPRESSED = 64 * 1024 * 1024
TOTAL = re.compile(r"^Total Upload: ([\d.]+) KiB / gzip: ([\d.]+) KiB", re.MULTILINE)
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


def pywrangler_problems(facts: dict) -> list[str]:
    """Where pywrangler's reading of this repo differs from what the lock and wrangler use."""
    problems = []
    if facts["python"] != PYTHON_VERSION:
        problems.append(f"pywrangler targets Python {facts['python']}, the lock {PYTHON_VERSION}")
    if Path(facts["vendor"]) != VENDOR:
        problems.append(f"pywrangler vendors into {facts['vendor']}, wrangler reads {VENDOR}")
    return problems


def dry_run() -> subprocess.CompletedProcess[str]:
    """`wrangler deploy --dry-run`, as pywrangler passes `deploy` on, with the pinned wrangler.

    pywrangler runs `npx --yes wrangler`, which fetches the newest wrangler from the npm
    registry; the pinned one is what this check (and the docs' second deploy path) uses.
    """
    shutil.rmtree(OUTDIR, ignore_errors=True)  # wrangler never removes stale outdir files
    env = {**os.environ, "WRANGLER_SEND_METRICS": "false", "CI": "true"}
    return subprocess.run(  # noqa: S603 - fixed argv
        [str(NODE), str(WRANGLER), "deploy", "--dry-run", "--outdir", str(OUTDIR)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def vendored_versions(files: set[str]) -> dict[str, str]:
    """{name: version} from each uploaded .dist-info/METADATA, as importlib.metadata reads it."""
    versions = {}
    for name in files:
        if re.fullmatch(r"python_modules/[^/]+\.dist-info/METADATA", name):
            headers = HeaderParser().parsestr((OUTDIR / name).read_text(encoding="utf-8"))
            versions[normalize(headers["Name"])] = headers["Version"]
    return versions


def upload_problems(files: set[str], config: dict, laid_out: set[str]) -> list[str]:
    own = {f for f in files if not f.startswith("python_modules/")}
    vendor = files - own
    problems = []
    if own != (expected := expected_modules(config)):
        missing, extra = sorted(expected - own), sorted(own - expected)
        problems.append(f"app modules: missing {missing}, extra {extra}")
    # wrangler drops `python_modules.exclude` matches (default `**/*.pyc`; the wheels have
    # none): an exclude added to wrangler.toml shows up here as missing files.
    if vendor != laid_out:
        problems.append(
            f"vendored files: missing {sorted(laid_out - vendor)[:10]}, "
            f"extra {sorted(vendor - laid_out)[:10]}"
        )
    vendor_tops = tuple(f"python_modules/{package}/" for package in (*PACKAGES, "executor"))
    if shipped := sorted(
        f
        for f in files
        if f.startswith(NEVER_SHIPPED + vendor_tops) or "__pycache__" in f or f.endswith(".pyc")
    ):
        problems.append(f"must not ship: {shipped[:10]}")
    return problems


def binding_problems(log: str, config: dict) -> list[str]:
    shown = set(re.findall(r"^env\.(\w+)", log, flags=re.MULTILINE))
    if missing := (REQUIRED_BINDINGS | declared_bindings(config)) - shown:
        return [f"bindings not declared or not recognised: {sorted(missing)}"]
    return []


def size_problems(log: str, files: set[str]) -> tuple[list[str], str]:
    """Over a limit?, and the sizes: wrangler's Total Upload, checked against the outdir."""
    match = TOTAL.search(log)
    if match is None:
        return ["wrangler printed no `Total Upload` line"], ""
    total, gzip = float(match[1]) * 1024, float(match[2]) * 1024
    on_disk = sum((OUTDIR / name).stat().st_size for name in files)
    report = f"upload {total / 1024:.0f} KiB, gzip {gzip / 1024:.0f} KiB"
    if abs(on_disk - total) > 0.01 * 1024:  # wrangler prints KiB with two decimals
        return [f"wrangler counts {total:.0f} bytes, the outdir holds {on_disk}"], report
    if gzip > PAID_LIMIT_GZIP or total > LIMIT_UNCOMPRESSED:
        return [f"{report} is over the Workers limits"], report
    fits = "fits" if gzip <= FREE_LIMIT_GZIP else "does NOT fit"
    return [], f"{report} (Workers Paid allows 10 MB gzip; {fits} Free's 3 MB)"


def fail(message: str) -> int:
    print(f"check_worker_bundle: FAIL: {message}", file=sys.stderr)
    return 1


def main() -> int:
    config = tomllib.loads((ROOT / "wrangler.toml").read_text())
    try:
        facts = pywrangler_layout.pywrangler_facts()
        if problems := pywrangler_problems(facts):
            return fail("; ".join(problems))
        wheels = pywrangler_layout.vendored_wheels(facts["sdk"])
        with pywrangler_layout.vendored(wheels.values(), VENDOR, facts["version"]):
            laid_out = {f"python_modules/{p.relative_to(VENDOR).as_posix()}"
                        for p in VENDOR.rglob("*") if p.is_file()}  # fmt: skip
            process = dry_run()
    except pywrangler_layout.LayoutError as e:
        return fail(str(e))
    log = ANSI.sub("", process.stdout + process.stderr)
    print(log)
    if process.returncode != 0:
        return fail(f"wrangler exited with {process.returncode}")
    if "[WARNING]" in log:
        return fail("wrangler warned about the configuration")

    files = {p.relative_to(OUTDIR).as_posix() for p in OUTDIR.rglob("*") if p.is_file()}
    files.discard("README.md")  # written by --outdir, not uploaded
    expected = {name: wheel.name.split("-")[1] for name, wheel in wheels.items()}
    if (versions := vendored_versions(files)) != expected:
        return fail(f"vendored {sorted(versions.items())}, expected {sorted(expected.items())}")
    size_issues, size_report = size_problems(log, files)
    problems = upload_problems(files, config, laid_out) + binding_problems(log, config)
    if problems := problems + size_issues:
        return fail("; ".join(problems))
    own = len([f for f in files if not f.startswith("python_modules/")])
    print(
        f"check_worker_bundle: OK: pywrangler {facts['version']} (Python {facts['python']}, "
        f"into python_modules/); {own} app modules (edge + shared; no local adapters, executor "
        f"or tests); {len(files) - own} vendored files of {len(versions)} packages ("
        + ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))
        + f"); {size_report}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
