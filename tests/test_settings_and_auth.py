from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

from edge.auth import ApiKeys, bearer_token
from edge.settings import ENV_KEYS, Settings, SettingsError, parse_api_keys


def test_api_keys_parse_to_key_tenant_pairs() -> None:
    assert parse_api_keys(" tenant_a:key1-long , tenant_b:key2-long,") == {
        "key1-long": "tenant_a",
        "key2-long": "tenant_b",
    }
    assert parse_api_keys("") == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("nocolon-secretvalue", "entry 1 must look like tenant:key"),
        ("a:short", "shorter than 8"),
        ("bad tenant:secretvalue", "tenant 'bad tenant'"),
        ("a:secretvalue,b:secretvalue", "same key appears twice"),
    ],
)
def test_bad_api_keys_name_the_entry_but_never_the_key(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        parse_api_keys(raw)
    assert "secretvalue" not in str(caught.value)


def test_settings_errors_name_the_key_and_value() -> None:
    with pytest.raises(SettingsError, match="EDGECREW_CHUNK_SIZE must be an integer, got 'big'"):
        Settings.from_env({"EDGECREW_CHUNK_SIZE": "big"})
    with pytest.raises(SettingsError, match="EDGECREW_CHUNK_OVERLAP"):
        Settings.from_env({"EDGECREW_CHUNK_SIZE": "200", "EDGECREW_CHUNK_OVERLAP": "150"})
    with pytest.raises(SettingsError, match="EDGECREW_ANSWER_CACHE_TTL"):
        Settings.from_env({"EDGECREW_ANSWER_CACHE_TTL": "30"})
    with pytest.raises(SettingsError, match="EDGECREW_MAX_SCHEDULES_PER_TENANT must be >= 0"):
        Settings.from_env({"EDGECREW_MAX_SCHEDULES_PER_TENANT": "-1"})
    with pytest.raises(SettingsError, match="EDGECREW_SCHEDULE_ADOPT_AFTER_SECONDS must be >= 1"):
        Settings.from_env({"EDGECREW_SCHEDULE_ADOPT_AFTER_SECONDS": "0"})


def test_settings_defaults_and_overrides() -> None:
    settings = Settings.from_env({"EDGECREW_LLM_MODEL": "smollm2", "EDGECREW_MIN_SCORE": "0.25"})
    assert settings.llm_model == "smollm2"
    assert settings.min_score == 0.25
    assert settings.embed_model == "@cf/baai/bge-small-en-v1.5"
    assert settings.llm_base_url is None
    assert settings.max_schedules_per_tenant == 100
    uncapped = Settings.from_env({"EDGECREW_MAX_SCHEDULES_PER_TENANT": "0"})
    assert uncapped.max_schedules_per_tenant == 0


def test_settings_repr_hides_the_llm_key() -> None:
    settings = Settings.from_env({"EDGECREW_LLM_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(settings)


def test_env_keys_list_exactly_what_from_env_reads() -> None:
    source = textwrap.dedent(inspect.getsource(Settings.from_env))
    read = {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and str(node.value).startswith("EDGECREW_")
    }
    assert read == set(ENV_KEYS)


def test_api_keys_resolve_tenants() -> None:
    keys = ApiKeys({"key-one-123": "a", "key-two-456": "b"})
    assert keys.tenant_for("Bearer key-one-123") == "a"
    assert keys.tenant_for("bearer   key-two-456") == "b"
    assert keys.tenant_for("Bearer key-one-12") is None
    assert keys.tenant_for("Basic key-one-123") is None
    assert keys.tenant_for("Bearer") is None
    assert keys.tenant_for(None) is None


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("Token abc") is None
    assert bearer_token("") is None
