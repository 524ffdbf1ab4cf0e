"""The local LLM server's pure parts, and its model cache with a recording converter."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from edge.local.llm_api import ChatCompletionRequest, Message, OpenAIError, sampling_for
from edge.local.llm_model import MODEL_INFO, ModelPreparationFailed, prepare_model
from edge.local.llm_server import cpu_isa_override, model_cache, thread_count
from edge.local.llm_text import IncrementalDecoder, StopMatcher


def feed_all(matcher: StopMatcher, pieces: Sequence[str]) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_a_stop_sequence_split_across_pieces_is_cut_with_what_follows() -> None:
    assert feed_all(StopMatcher(["\nObservation:"]), ["Act", "ion: x\nObs", "ervat", "ion: y"]) == (
        "Action: x",
        True,
    )


def test_text_that_only_began_a_stop_sequence_comes_out_at_the_end() -> None:
    matcher = StopMatcher(["four"])
    assert matcher.feed("one fo") == ("one ", False)  # "fo" may begin "four": held back
    assert matcher.feed("x") == ("fox", False)
    assert matcher.feed(" f") == (" ", False)
    assert matcher.flush() == "f"


def test_the_earliest_of_several_stop_sequences_wins_and_empty_ones_are_ignored() -> None:
    assert feed_all(StopMatcher(["", "b", "a b"]), ["x a b c"]) == ("x ", True)
    assert feed_all(StopMatcher([]), ["no", " stops"]) == ("no stops", False)


def test_the_decoder_waits_for_a_character_split_across_tokens() -> None:
    vocabulary = {1: b"h", 2: b"\xc3", 3: b"\xa9", 4: b"!"}

    def decode(ids: Sequence[int]) -> str:
        return b"".join(vocabulary[i] for i in ids).decode(errors="replace")

    decoder = IncrementalDecoder(decode)
    assert [decoder.push(i) for i in (1, 2, 3, 4)] == ["h", "", "é", "!"]


def request(**fields: object) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


def test_sampling_fills_the_context_when_max_tokens_is_unset_and_prefers_the_newer_name() -> None:
    assert sampling_for(request(), 100, 8192).max_tokens == 8092
    assert sampling_for(request(max_tokens=5, max_completion_tokens=7), 100, 8192).max_tokens == 7
    greedy = sampling_for(request(temperature=0, stop="x"), 10, 8192)
    assert (greedy.temperature, greedy.top_p, greedy.stop) == (0, 1.0, ("x",))


@pytest.mark.parametrize(("prompt", "max_tokens"), [(8192, None), (8000, 193), (10, 9000)])
def test_a_prompt_and_reply_over_the_context_is_a_400(prompt: int, max_tokens: int | None) -> None:
    with pytest.raises(OpenAIError) as caught:
        sampling_for(request(max_tokens=max_tokens), prompt, 8192)
    assert caught.value.status == 400 and caught.value.code == "context_length_exceeded"
    assert "8192" in caught.value.message


def test_text_parts_are_joined_and_developer_is_a_system_message() -> None:
    parts = Message.model_validate(
        {
            "role": "developer",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        }
    )
    assert parts.as_template_input() == {"role": "system", "content": "ab"}
    assert Message(role="assistant", content=None).as_template_input()["content"] == ""


def test_the_environment_settings_are_checked_and_named_when_wrong() -> None:
    assert cpu_isa_override({"EDGECREW_LLM_CPU_ISA": "avx2"}) == "AVX2"
    assert cpu_isa_override({}) is None
    with pytest.raises(ValueError, match="EDGECREW_LLM_CPU_ISA='SSE9'"):
        cpu_isa_override({"EDGECREW_LLM_CPU_ISA": "sse9"})
    assert thread_count({"EDGECREW_LLM_THREADS": "3"}) == 3
    assert thread_count({}) >= 1
    with pytest.raises(ValueError, match="EDGECREW_LLM_THREADS='0'"):
        thread_count({"EDGECREW_LLM_THREADS": "0"})
    assert model_cache({}, Path("d")) == Path("d/models")
    assert model_cache({"EDGECREW_LLM_CACHE_DIR": "/c"}, Path("d")) == Path("/c")


class RecordingConverter:
    """Writes a stand-in model, or fails half-way when told to; records each call."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[Path] = []
        self.fail = fail

    def __call__(self, gguf: Path, out: Path) -> None:
        self.calls.append(out)
        out.mkdir()
        (out / "model.bin").write_bytes(b"half")
        if self.fail:
            raise RuntimeError("killed mid-conversion")
        (out / MODEL_INFO).write_text(json.dumps({"source": gguf.name}))


def test_a_model_is_converted_once_then_reused(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights")
    convert = RecordingConverter()
    first = prepare_model(gguf, tmp_path / "cache", convert=convert)
    again = prepare_model(gguf, tmp_path / "cache", convert=convert)
    assert first.directory == again.directory and len(convert.calls) == 1
    assert first.conversion_seconds is not None and again.conversion_seconds is None
    assert (first.directory / MODEL_INFO).is_file()


def test_a_failed_conversion_leaves_nothing_that_a_later_start_would_reuse(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights")
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="mid-conversion"):
        prepare_model(gguf, cache, convert=RecordingConverter(fail=True))
    assert sorted(p.name for p in cache.iterdir()) == [".lock"]
    (cache / ".partial-left-by-a-kill").mkdir()  # as after SIGKILL, when no cleanup ran
    convert = RecordingConverter()
    prepared = prepare_model(gguf, cache, convert=convert)
    assert len(convert.calls) == 1
    assert sorted(p.name for p in cache.iterdir()) == [".lock", prepared.directory.name]


def test_new_weights_are_converted_anew_and_replace_the_old_conversion(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights v1")
    cache = tmp_path / "cache"
    old = prepare_model(gguf, cache, convert=RecordingConverter())
    gguf.write_bytes(b"weights v2")
    other = tmp_path / "m-other.gguf"  # another model whose name begins the same
    other.write_bytes(b"other weights")
    kept = prepare_model(other, cache, convert=RecordingConverter())
    new = prepare_model(gguf, cache, convert=RecordingConverter())
    assert new.directory != old.directory and not old.directory.exists()
    assert kept.directory.exists()


def test_a_missing_gguf_or_an_empty_conversion_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelPreparationFailed, match=r"no GGUF model file at .*nothing\.gguf"):
        prepare_model(tmp_path / "nothing.gguf", tmp_path)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights")
    with pytest.raises(ModelPreparationFailed, match="wrote no"):
        prepare_model(gguf, tmp_path / "cache", convert=lambda source, out: out.mkdir())
    assert not list((tmp_path / "cache").glob("m-*"))


def test_the_cpus_own_kernels_are_kept_when_a_test_generation_passes() -> None:
    from edge.local.llm_server import working_isa

    tried: list[str | None] = []
    assert working_isa(lambda isa: tried.append(isa) or 0) is None
    assert tried == [None]


def test_a_crashing_choice_of_kernels_falls_back_to_avx2_then_generic() -> None:
    """As on the CPU where llama.cpp's native build died with SIGSEGV on any prompt."""
    import signal

    from edge.local.llm_server import working_isa

    tried: list[str | None] = []

    def crashes_unless_generic(isa: str | None) -> int:
        tried.append(isa)
        return 0 if isa == "GENERIC" else -signal.SIGSEGV

    assert working_isa(crashes_unless_generic) == "GENERIC"
    assert tried == [None, "AVX2", "GENERIC"]
    with pytest.raises(ValueError, match="every CPU ISA crashed"):
        working_isa(lambda isa: -signal.SIGSEGV)
