"""The local LLM server: `python -m edge.local.llm_server --model GGUF [--alias smollm2]
[--host 127.0.0.1] [--port 8081] [--data-dir .edgecrew] [--ctx 8192] [--threads N]`.

It converts the GGUF for CTranslate2 the first time (llm_model), loads it (llm_engine), then
serves OpenAI's chat completions API (llm_app). It listens only once the model is loaded, so
a health check that answers means the model is ready.

Environment: `EDGECREW_LLM_THREADS` (default: every core this process may use),
`EDGECREW_LLM_CACHE_DIR` (default: `models/` in the data dir; tests share one) and
`EDGECREW_LLM_CPU_ISA` (GENERIC, AVX, AVX2 or AVX512; sets `CT2_FORCE_CPU_ISA`), the escape
hatch for a CPU on which the instruction set CTranslate2 picks misbehaves.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import uvicorn

from edge.local.llm_app import create_llm_app
from edge.local.llm_engine import CTranslate2Engine, Sampling
from edge.local.llm_model import ModelPreparationFailed, prepare_model
from edge.local.processes import describe_exit

log = logging.getLogger("edge.local.llm_server")


#: CTranslate2's names for the instruction sets it can be forced to (CT2_FORCE_CPU_ISA).
CPU_ISAS = ("GENERIC", "AVX", "AVX2", "AVX512")


def cpu_isa_override(env: Mapping[str, str]) -> str | None:
    """`EDGECREW_LLM_CPU_ISA`, checked: the escape hatch for a CPU whose kernels misbehave."""
    value = env.get("EDGECREW_LLM_CPU_ISA", "").strip().upper()
    if value and value not in CPU_ISAS:
        raise ValueError(f"EDGECREW_LLM_CPU_ISA={value!r} is not one of {', '.join(CPU_ISAS)}")
    return value or None


#: Tried in this order when the instruction set CTranslate2 picks crashes a generation.
FALLBACK_ISAS = ("AVX2", "GENERIC")
SELF_TEST_TIMEOUT_S = 180.0


def working_isa(test: Callable[[str | None], int]) -> str | None:
    """The instruction set to run with: CTranslate2's own choice unless a test generation
    with it dies, then the first fallback whose test passes (None: its own choice).

    A build tuned to the wrong kernels crashed the old llama.cpp server on one of our
    CPUs on any prompt over one token, after its health check had already answered. A
    crash in the engine cannot be caught in-process, so `test(isa)` runs a short real
    generation in a child process and returns its exit code.
    """
    for isa in (None, *FALLBACK_ISAS):
        code = test(isa)
        if code == 0:
            return isa
        log.warning(
            "a test generation with %s %s; trying %s",
            f"CPU ISA {isa}" if isa else "CTranslate2's choice of CPU ISA",
            describe_exit(code), "the next" if isa != FALLBACK_ISAS[-1] else "nothing more",
        )  # fmt: skip
    raise ValueError("every CPU ISA crashed a test generation; see the lines above")


def _test_in_child(directory: Path, threads: int) -> Callable[[str | None], int]:
    def test(isa: str | None) -> int:
        env = {k: v for k, v in os.environ.items() if k != "CT2_FORCE_CPU_ISA"}
        if isa:
            env["CT2_FORCE_CPU_ISA"] = isa
        argv = [sys.executable, "-m", "edge.local.llm_server", "--self-test", str(directory),
                "--threads", str(threads), "--model", "-"]  # fmt: skip
        try:
            done = subprocess.run(argv, env=env, timeout=SELF_TEST_TIMEOUT_S, check=False)  # noqa: S603
        except subprocess.TimeoutExpired:
            return 1
        return done.returncode

    return test


def _self_test(directory: Path, threads: int) -> None:
    """In the child: load the engine and generate a few tokens from a multi-token prompt."""
    engine = CTranslate2Engine(directory, threads=threads)
    ids = engine.prompt_ids([{"role": "user", "content": "Say hello to the new developer."}])
    outcome = engine.generate(ids, Sampling(max_tokens=8, temperature=0), lambda _: None,
                              threading.Event())  # fmt: skip
    raise SystemExit(0 if outcome.completion_tokens >= 1 else 2)


def thread_count(env: Mapping[str, str]) -> int:
    """`EDGECREW_LLM_THREADS`, or every core this process may run on."""
    raw = env.get("EDGECREW_LLM_THREADS", "").strip()
    if not raw:
        return len(os.sched_getaffinity(0))
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"EDGECREW_LLM_THREADS={raw!r} is not a positive whole number")
    return int(raw)


def model_cache(env: Mapping[str, str], data_dir: Path) -> Path:
    """`EDGECREW_LLM_CACHE_DIR`, or `models/` in the data dir: where converted models live."""
    return Path(env.get("EDGECREW_LLM_CACHE_DIR") or data_dir / "models")


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edge.local.llm_server")
    parser.add_argument("--model", type=Path, required=True, help="the GGUF file")
    parser.add_argument("--alias", default="smollm2", help="the model name clients send")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--data-dir", type=Path, default=Path(".edgecrew"), help="cache root")
    parser.add_argument("--ctx", type=int, default=8192, help="context window, in tokens")
    parser.add_argument("--threads", type=int, help="default: EDGECREW_LLM_THREADS or all cores")
    parser.add_argument("--self-test", type=Path, help=argparse.SUPPRESS)  # working_isa's child
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Convert the model if needed, load it, then listen: /health answers once it is loaded."""
    args = _arguments(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.self_test:
        _self_test(args.self_test, args.threads or thread_count(os.environ))
    try:
        isa = cpu_isa_override(os.environ)
        threads = args.threads or thread_count(os.environ)
        prepared = prepare_model(args.model, model_cache(os.environ, args.data_dir))
        if not isa:  # the user's choice is kept; ours is tested first
            isa = working_isa(_test_in_child(prepared.directory, threads))
        if isa:  # read by CTranslate2 when it loads: set before the engine imports it
            os.environ["CT2_FORCE_CPU_ISA"] = isa
        started = time.monotonic()
        engine = CTranslate2Engine(prepared.directory, threads=threads)
        if not 0 < args.ctx <= engine.context_length:
            raise ValueError(f"--ctx {args.ctx} is outside 1..{engine.context_length}, the model's")
    except (ValueError, ModelPreparationFailed) as exc:
        log.error("%s", exc)
        raise SystemExit(1) from exc
    log.info(
        "serving %s as %r on http://%s:%d: int8, %d threads, CPU ISA %s, context %d, "
        "loaded in %.1f s",
        args.model.name, args.alias, args.host, args.port, threads,
        f"forced to {isa}" if isa else "chosen by CTranslate2",
        args.ctx, time.monotonic() - started,
    )  # fmt: skip
    app = create_llm_app(engine, args.alias, args.ctx)
    # No access log: one line per request comes from the handler, with token counts.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
