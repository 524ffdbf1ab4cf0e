"""python_modules/ as `pywrangler sync` leaves it, laid out offline from the locked wheels.

pywrangler (workers-py) cannot sync on these machines: it needs a native CPython 3.14 and a
Pyodide interpreter that uv downloads from GitHub, and Pyodide's package index
(docs/deploy-cloudflare.md). Its last step is plain, and this module repeats it.
`sync.py:_install_requirements_to_vendor` empties the Pyodide venv's site-packages, has
`uv pip install` put the resolved wheels there, copies that folder to
`<project root>/python_modules`, and adds an empty `pyvenv.cfg` and a `.synced` token
holding its version. wrangler uploads every file in there except `**/*.pyc`.

Here the wheels are worker.lock's plus the runtime SDK that pywrangler always adds
(`resolve.py:MANAGED_SDK_PACKAGE`). Each is unpacked as an installer unpacks it into
site-packages: `<name>.data/purelib` and `platlib` go to the top, and the rest of `.data`
(scripts, headers, data) is left out, since in a venv it goes to bin/, include/ or the
prefix. uv also writes INSTALLER, REQUESTED and uv_cache.json into each .dist-info and
rewrites RECORD. Those few hundred bytes a package are the only difference.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lock_worker_packages import normalize, pins

ROOT = Path(__file__).resolve().parents[1]
PYWRANGLER_PYTHON = ROOT / ".tools/pywrangler/bin/python"  # `make tools` installs it
LOCKED_WHEELS = ROOT / ".tools/wheels/worker"
SDK_WHEELS = ROOT / ".tools/wheels"  # the Makefile's SDK_WHEEL, as the Pyodide test runs it
SAVED = ROOT / "build/python_modules.saved"

# Run by pywrangler's own interpreter in the project root, as `pywrangler sync` would be:
# these functions read pyproject.toml and wrangler.toml and need no network.
_FACTS = """
import json
from pywrangler import resolve, sync, utils
print(json.dumps({
    "version": utils.get_pywrangler_version(),
    "python": utils.get_python_version(),
    "interpreter": utils.get_uv_pyodide_interp_name(),
    "index": utils.get_pyodide_index(),
    "sdk": resolve.MANAGED_SDK_PACKAGE,
    "vendor": str(sync.get_vendor_modules_path()),
}))
"""


class LayoutError(Exception):
    """The vendored packages cannot be laid out as pywrangler would."""


def pywrangler_facts() -> dict[str, Any]:
    """What pywrangler's code says it would use for this repo: Python, index, SDK, folder."""
    if not PYWRANGLER_PYTHON.exists():
        raise LayoutError(f"{PYWRANGLER_PYTHON.relative_to(ROOT)} is missing: run `make tools`")
    process = subprocess.run(  # noqa: S603 - our own interpreter and script
        [str(PYWRANGLER_PYTHON), "-c", _FACTS],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if process.returncode != 0:
        # pywrangler logs why (e.g. no `python_workers` flag) before its traceback
        raise LayoutError(f"pywrangler rejects this repo's configuration: {process.stderr}")
    facts: dict[str, Any] = json.loads(process.stdout.splitlines()[-1])
    return facts


def vendored_wheels(sdk: str) -> dict[str, Path]:
    """{name: wheel} for worker.lock's set, each checked against its hash, plus the SDK's."""
    pinned = pins()
    wheels = {}
    for wheel in sorted(LOCKED_WHEELS.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        expected = pinned.get(normalize(name))
        if expected is None or expected[0] != version:
            raise LayoutError(f"{wheel.name} is not in worker.lock: run `make tools`")
        if hashlib.sha256(wheel.read_bytes()).hexdigest() != expected[1]:
            raise LayoutError(f"{wheel.name} does not have the hash worker.lock pins")
        wheels[normalize(name)] = wheel
    if missing := sorted(set(pinned) - set(wheels)):
        raise LayoutError(f"locked wheels missing from {LOCKED_WHEELS}: {missing}")
    if normalize(sdk) not in wheels:
        found = sorted(SDK_WHEELS.glob(f"{normalize(sdk).replace('-', '_')}-*.whl"))
        if len(found) != 1:
            raise LayoutError(f"expected one {sdk} wheel in {SDK_WHEELS}, found {found}")
        wheels[normalize(sdk)] = found[0]
    return wheels


def install(wheel: Path, site_packages: Path) -> None:
    """Put a wheel's files where an installer puts them in a virtualenv's site-packages."""
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        dist_infos = [top for top in tops if top.endswith(".dist-info")]
        if len(dist_infos) != 1:
            raise LayoutError(f"{wheel.name}: expected one .dist-info, found {dist_infos}")
        data = dist_infos[0].removesuffix(".dist-info") + ".data/"
        for member in archive.infolist():
            name = member.filename
            if member.is_dir():
                continue
            if name.startswith(data):
                scheme, _, name = name.removeprefix(data).partition("/")
                if scheme not in {"purelib", "platlib"}:
                    continue
            target = site_packages / name
            if not target.resolve().is_relative_to(site_packages.resolve()):
                raise LayoutError(f"{wheel.name}: {member.filename} lands outside site-packages")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))


def lay_out(wheels: Iterable[Path], folder: Path, pywrangler_version: str) -> None:
    """`folder` as pywrangler's sync leaves python_modules/: site-packages plus two markers."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for wheel in wheels:
        install(wheel, folder)
    (folder / "pyvenv.cfg").touch()
    (folder / ".synced").write_text(pywrangler_version)


@contextmanager
def vendored(wheels: Iterable[Path], folder: Path, pywrangler_version: str) -> Iterator[None]:
    """python_modules/ laid out while the block runs, then removed.

    Its `.synced` token could make a later `pywrangler deploy` skip its own sync and ship
    this folder, so it never outlives the check. A folder that is already there (a real
    sync) is moved aside and put back afterwards.
    """
    if SAVED.exists():
        raise LayoutError(f"{SAVED} is left from an interrupted check: restore or delete it")
    had_one = folder.exists()
    if had_one:
        SAVED.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(SAVED)
    try:
        lay_out(wheels, folder, pywrangler_version)
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if had_one:
            SAVED.rename(folder)
