"""What can be checked here of the deployment files without Docker or Cloudflare."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

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
