from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from edge.app import create_app
from edge.ports import Ports
from edge.settings import Settings
from tests.doubles.catalog import publish_shipped_crews
from tests.doubles.models import RecordingEmbedder, RecordingGenerator
from tests.local_llm import LocalLLM, running_local_llm
from tests.support import sqlite_ports

# Nothing under test may phone home: CrewAI and Prefect telemetry off before test modules
# (which import them) load.
for _name, _value in {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "OTEL_SDK_DISABLED": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(_name, _value)

# The local LLM's first start converts its GGUF (a minute on 2 cores). Tests, and the dev
# stacks they start, share the cache `edgecrew dev` uses in this checkout: converted once.
os.environ.setdefault(
    "EDGECREW_LLM_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".edgecrew" / "models")
)

KEY_A = "key-a-0123456789"
KEY_B = "key-b-0123456789"
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
AUTH_B = {"Authorization": f"Bearer {KEY_B}"}


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLLM]:
    """The real SmolLM2 server, one per test session."""
    with running_local_llm(tmp_path_factory.mktemp("local-llm")) as llm:
        yield llm


class Clock:
    """A settable clock for TTL tests."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings() -> Settings:
    return Settings(
        api_keys={KEY_A: "tenant_a", KEY_B: "tenant_b"},
        embed_model="fake-bow",
        chunk_size=200,
        chunk_overlap=40,
    )


@pytest.fixture
def generator() -> RecordingGenerator:
    return RecordingGenerator()


@pytest.fixture
def embedder() -> RecordingEmbedder:
    return RecordingEmbedder()


@pytest.fixture
def local_ports(
    tmp_path: Path, embedder: RecordingEmbedder, generator: RecordingGenerator
) -> Ports:
    return sqlite_ports(tmp_path, embedder=embedder, generator=generator)


@pytest.fixture
async def app(settings: Settings, local_ports: Ports) -> FastAPI:
    await publish_shipped_crews(local_ports.kv)
    return create_app(settings, local_ports)


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    """A client that calls the app in-process; app errors become 500s, as in production."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://edge.test")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


@pytest.fixture
def make_client() -> Callable[[FastAPI], httpx.AsyncClient]:
    return asgi_client
