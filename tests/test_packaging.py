"""What can be checked here of the deployment files without Docker or Cloudflare."""

from __future__ import annotations

import ast
import importlib
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from executor.config import load_config
from shared.crews import FLOW_NAME

ROOT = Path(__file__).resolve().parents[1]


def test_prefect_yaml_has_one_deployment_named_after_the_pool_it_serves() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = config["deployments"]  # one template; executor.deploy fills the pool in
    assert deployment["name"] == deployment["work_pool"]["name"] == "{{ $EDGECREW_POOL }}"
    path, _, function = deployment["entrypoint"].partition(":")
    tree = ast.parse((ROOT / path).read_text())
    flows = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function]
    assert flows, f"{deployment['entrypoint']} does not exist"
    decorator = ast.unparse(flows[0].decorator_list[0])
    assert "name=FLOW_NAME" in decorator and FLOW_NAME == "run-crew-job"


def test_the_worker_command_is_installed_with_the_package() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["edgecrew-worker"] == "executor.worker:main"


def test_compose_workers_restart_always_and_cover_every_pool_of_the_config() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    workers = {k: v for k, v in compose["services"].items() if k.startswith("worker-")}
    pools = {
        service["command"][service["command"].index("--pool") + 1] for service in workers.values()
    }
    assert pools == set(load_config(ROOT / "edgecrew.toml").pools)
    assert compose["services"]["deploy"]["entrypoint"] == ["python", "-m", "executor.deploy"]
    assert all(service["restart"] == "always" for service in workers.values())
    for service in workers.values():
        env = service["environment"]
        assert {"PREFECT_API_URL", "EDGECREW_EDGE_URL", "EDGECREW_EXECUTOR_SECRET"} <= set(env)
        # Draining on SIGTERM only helps if Docker waits at least that long to SIGKILL.
        drain = int(service["command"][service["command"].index("--drain-seconds") + 1])
        grace_minutes = int(service["stop_grace_period"].removesuffix("m"))
        assert grace_minutes * 60 > drain


def test_dockerfile_installs_the_executor_extra_and_runs_a_worker_with_the_crews() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install '.[executor]'" in dockerfile
    assert 'ENTRYPOINT ["edgecrew-worker"' in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert "USER worker" in dockerfile
    assert "EDGECREW_CONFIG=/app/edgecrew.toml" in dockerfile
    for copied in ("shared", "edge", "executor", "prefect.yaml", "pyproject.toml",
                   "edgecrew.toml", "examples/crews"):  # fmt: skip
        assert copied in dockerfile
    # Every path edgecrew.toml names is inside what the image copies.
    for entry in load_config(ROOT / "edgecrew.toml").crews.values():
        named = Path(entry.source) if entry.is_json else entry.path
        assert named is not None and named.is_relative_to(ROOT / "examples" / "crews")


def test_the_worker_lock_pins_every_base_dependency_for_the_runtime_wrangler_targets() -> None:
    """worker.lock is the Worker's package set: each base dependency pinned (with a hash)
    at a version its requirement allows, for Python 3.14, which workerd runs from
    compatibility date 2026-09-08; the real-Pyodide test installs exactly these."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "worker.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            spec, _, digest = line.partition(" --hash=sha256:")
            name, _, version = spec.partition("==")
            assert len(digest) == 64, line
            pins[canonicalize_name(name)] = version
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in map(Requirement, base):
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not in worker.lock"
        assert requirement.specifier.contains(pinned), (requirement, pinned)
    wrangler = tomllib.loads((ROOT / "wrangler.toml").read_text())
    assert wrangler["compatibility_date"] >= "2026-09-08", "the lock is for the 3.14 runtime"
    package = (ROOT / ".tools/package.json").read_text()
    assert '"pyodide": "314.' in package, "the Pyodide the tests run is the runtime's"


@pytest.fixture
def layout(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """scripts/pywrangler_layout.py, which the bundle check uses to lay out python_modules/."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    return importlib.import_module("pywrangler_layout")


def _wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_python_modules_is_site_packages_as_an_installer_leaves_it_plus_pywranglers_markers(
    layout: ModuleType, tmp_path: Path
) -> None:
    wheel = _wheel(tmp_path / "demo-1.0-py3-none-any.whl", {
        "demo/__init__.py": "",
        "demo-1.0.dist-info/METADATA": "Name: demo\nVersion: 1.0\n",
        "demo-1.0.data/purelib/demo_extra.py": "",
        "demo-1.0.data/platlib/demo_native.so": "",
        "demo-1.0.data/scripts/demo": "#!python\n",  # a venv's bin/: never vendored
        "demo-1.0.data/headers/demo.h": "",
    })  # fmt: skip
    folder = tmp_path / "python_modules"
    layout.lay_out([wheel], folder, "1.17.9")
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == {
        "demo/__init__.py", "demo-1.0.dist-info/METADATA", "demo_extra.py", "demo_native.so",
        "pyvenv.cfg", ".synced",
    }  # fmt: skip
    assert (folder / ".synced").read_text() == "1.17.9"  # pywrangler's sync token
    assert (folder / "pyvenv.cfg").read_text() == ""


def test_a_wheel_that_writes_outside_site_packages_is_refused(
    layout: ModuleType, tmp_path: Path
) -> None:
    wheel = _wheel(tmp_path / "evil-1.0-py3-none-any.whl", {
        "evil-1.0.dist-info/METADATA": "Name: evil\nVersion: 1.0\n",
        "../outside.py": "",
    })  # fmt: skip
    with pytest.raises(layout.LayoutError, match="outside site-packages"):
        layout.lay_out([wheel], tmp_path / "python_modules", "1.17.9")
    assert not (tmp_path / "outside.py").exists()


def test_the_check_never_leaves_its_python_modules_behind_and_restores_a_real_sync(
    layout: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leftover `.synced` token could make `pywrangler deploy` skip its sync and ship it."""
    monkeypatch.setattr(layout, "SAVED", tmp_path / "build" / "saved")
    wheel = _wheel(tmp_path / "demo-1.0-py3-none-any.whl", {
        "demo/__init__.py": "",
        "demo-1.0.dist-info/METADATA": "Name: demo\nVersion: 1.0\n",
    })  # fmt: skip
    folder = tmp_path / "python_modules"
    with layout.vendored([wheel], folder, "1.17.9"):
        assert (folder / "demo" / "__init__.py").exists()
    assert not folder.exists()

    folder.mkdir()
    (folder / "from-a-real-sync.py").write_text("")
    with pytest.raises(RuntimeError), layout.vendored([wheel], folder, "1.17.9"):
        assert not (folder / "from-a-real-sync.py").exists()
        raise RuntimeError("the dry run failed")
    assert sorted(p.name for p in folder.iterdir()) == ["from-a-real-sync.py"]


def test_the_folders_pywrangler_sync_writes_are_never_committed() -> None:
    """Beside pyproject.toml (sync.py): the vendored packages and its two virtualenvs."""
    ignored = set((ROOT / ".gitignore").read_text().splitlines())
    assert {"python_modules/", ".venv-workers/"} <= ignored
