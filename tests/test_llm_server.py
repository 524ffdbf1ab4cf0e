"""The local LLM server with the real SmolLM2 on CTranslate2, as `edgecrew dev` starts it,
called by the clients that call it in production: the official `openai` client, CrewAI's
LLM and plain HTTP. Greedy decoding (temperature 0) keeps the answers reproducible."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.local_llm import LocalLLM

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


def complete(llm: LocalLLM, **fields: object) -> httpx.Response:
    body = {"model": "smollm2", "messages": QUESTION, "temperature": 0, **fields}
    return httpx.post(f"{llm.base_url}/chat/completions", json=body, timeout=120)


def test_it_lists_its_one_model_and_is_healthy(local_llm: LocalLLM) -> None:
    models = httpx.get(f"{local_llm.base_url}/models").json()
    assert [m["id"] for m in models["data"]] == ["smollm2"] and models["object"] == "list"
    health = httpx.get(local_llm.base_url.removesuffix("/v1") + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_a_completion_counts_its_tokens_and_stops_at_max_tokens(local_llm: LocalLLM) -> None:
    reply = complete(local_llm, max_tokens=3)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    choice = body["choices"][0]
    assert body["object"] == "chat.completion" and body["model"] == "smollm2"
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 3 and usage["prompt_tokens"] > 10
    assert usage["total_tokens"] == usage["prompt_tokens"] + 3


def test_the_openai_client_streams_the_same_text_and_then_the_usage(local_llm: LocalLLM) -> None:
    client = openai.OpenAI(base_url=local_llm.base_url, api_key="unused")
    chunks = list(
        client.chat.completions.create(
            model="smollm2", messages=QUESTION, temperature=0, max_tokens=24,  # type: ignore[arg-type]
            stream=True, stream_options={"include_usage": True},
        )
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 2
    assert finishes[-1] in {"stop", "length"} and set(finishes[:-1]) == {None}
    whole = complete(local_llm, max_tokens=24).json()
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1].usage.completion_tokens == whole["usage"]["completion_tokens"]


def test_stop_sequences_cut_the_text_streamed_or_not(local_llm: LocalLLM) -> None:
    full = complete(local_llm, max_tokens=40).json()["choices"][0]["message"]["content"]
    words = full.split()
    assert len(words) >= 4, full
    stop = " " + words[3]  # a word a few tokens in: the reply must end just before it
    expected = full[: full.index(stop)]
    cut = complete(local_llm, max_tokens=40, stop=[stop, "never appears"]).json()
    assert cut["choices"][0] == {
        "index": 0, "message": {"role": "assistant", "content": expected},
        "finish_reason": "stop", "logprobs": None,
    }  # fmt: skip
    client = openai.OpenAI(base_url=local_llm.base_url, api_key="unused")
    stream = client.chat.completions.create(
        model="smollm2", messages=QUESTION, temperature=0, max_tokens=40, stop=stop,  # type: ignore[arg-type]
        stream=True,
    )  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected


def test_crewai_gets_an_answer_through_its_openai_provider(local_llm: LocalLLM) -> None:
    from crewai import LLM

    # As executor/llm.py builds the crews' LLM. CrewAI 1.15's own OpenAI provider (no
    # litellm) cuts at its ReAct stop words itself; the server's stop is tested above.
    llm = LLM(
        model="openai/smollm2", base_url=local_llm.base_url, api_key="unused",
        temperature=0, max_tokens=40, stop=["\nObservation:"],
    )  # fmt: skip
    answer = llm.call(
        [
            {"role": "system", "content": "Answer with a Thought, then a Final Answer."},
            {"role": "user", "content": "What colour is the sky?"},
        ]
    )
    assert isinstance(answer, str) and answer.strip()
    assert "\nObservation:" not in answer


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": QUESTION}, "model"),
        ({"model": "smollm2", "messages": []}, "messages"),
        ({"model": "smollm2", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"model": "smollm2", "messages": QUESTION, "max_tokens": 0}, "max_tokens"),
        ({"model": "smollm2", "messages": QUESTION, "temperature": 3}, "temperature"),
        ({"model": "smollm2", "messages": QUESTION, "n": 2}, "n"),
        (
            {
                "model": "smollm2",
                "messages": [{"role": "user", "content": [{"type": "image_url"}]}],
            },
            "messages.0.content",
        ),
    ],
)
def test_bad_bodies_are_400s_in_openai_shape(
    local_llm: LocalLLM, body: dict[str, object], param: str
) -> None:
    reply = httpx.post(f"{local_llm.base_url}/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"].startswith(param)


def test_unparsable_json_an_unknown_model_and_an_unknown_route_are_errors(
    local_llm: LocalLLM,
) -> None:
    url = f"{local_llm.base_url}/chat/completions"
    garbled = httpx.post(url, content=b"{nope", headers={"Content-Type": "application/json"})
    assert garbled.status_code == 400 and "JSON" in garbled.json()["error"]["message"]
    unknown = httpx.post(url, json={"model": "gpt-9", "messages": QUESTION})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    missing = httpx.get(f"{local_llm.base_url}/nothing-here")
    assert missing.status_code == 404 and "error" in missing.json()


def test_a_prompt_over_the_context_is_a_400_before_any_generation(local_llm: LocalLLM) -> None:
    long = [{"role": "user", "content": "lorem ipsum dolor " * 3000}]  # ~9,000 tokens
    started = time.monotonic()
    reply = complete(local_llm, messages=long, max_tokens=16)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "context_length_exceeded" and "8192" in error["message"]
    assert time.monotonic() - started < 10  # refused, not prefilled
    over = complete(local_llm, max_tokens=8190)  # a short prompt, but too long a reply
    assert over.status_code == 400 and over.json()["error"]["code"] == "context_length_exceeded"


# Greedy SmolLM2 answers this with digits until max_tokens: minutes, unless cancelled.
ENDLESS = {
    "model": "smollm2", "temperature": 0, "max_tokens": 4000, "repetition_penalty": 1.0,
    "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
}  # fmt: skip


def cancelled_generations(llm: LocalLLM, kind: str) -> list[int]:
    """Completion tokens of the generations the server's log shows as cancelled."""
    return [
        int(line.split(" prompt + ")[1].split()[0])
        for line in llm.log_lines()
        if f"INFO edge.local.llm_server: {kind}:" in line and line.endswith("cancelled")
    ]


def assert_the_server_is_free(llm: LocalLLM) -> None:
    started = time.monotonic()
    after = complete(llm, max_tokens=4)
    assert after.status_code == 200 and time.monotonic() - started < 20


def test_a_dropped_stream_stops_its_generation_and_frees_the_server(local_llm: LocalLLM) -> None:
    body = {**ENDLESS, "stream": True}
    with httpx.stream("POST", f"{local_llm.base_url}/chat/completions", json=body) as stream:
        lines = stream.iter_lines()
        received = [next(lines) for _ in range(12)]  # a few tokens, then hang up
    assert sum(line.startswith("data: ") for line in received) >= 5
    assert_the_server_is_free(local_llm)
    cancelled = cancelled_generations(local_llm, "chat completion (stream)")
    assert cancelled and cancelled[-1] < 200, "the dropped stream's generation went on"


def test_a_client_that_gives_up_on_a_completion_stops_its_generation(local_llm: LocalLLM) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{local_llm.base_url}/chat/completions", json=ENDLESS, timeout=3)
    assert_the_server_is_free(local_llm)
    cancelled = cancelled_generations(local_llm, "chat completion")
    assert cancelled and cancelled[-1] < 200, "the abandoned completion's generation went on"


async def test_concurrent_requests_each_get_their_own_answer(local_llm: LocalLLM) -> None:
    questions = ["What is 2 + 2?", "Name a fruit.", "Say hello in French."]

    def body(question: str) -> dict[str, object]:
        messages = [{"role": "user", "content": question}]
        return {"model": "smollm2", "messages": messages, "temperature": 0, "max_tokens": 12}

    async with httpx.AsyncClient(base_url=local_llm.base_url, timeout=120) as client:
        alone = [(await client.post("/chat/completions", json=body(q))).json() for q in questions]
        together = await asyncio.gather(
            *(client.post("/chat/completions", json=body(q)) for q in questions)
        )
    assert [r.json()["choices"] for r in together] == [a["choices"] for a in alone]
