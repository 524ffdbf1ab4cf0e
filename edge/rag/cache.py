"""Answer-cache keys: tenant + normalized question + everything that changes the answer."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping

_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.]+$")


def normalize_question(question: str) -> str:
    """Case, width, spacing and trailing punctuation do not change what is asked."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return _TRAILING.sub("", _SPACE.sub(" ", text).strip())


def answer_cache_key(
    *,
    tenant: str,
    question: str,
    corpus_version: str,
    model: str,
    top_k: int,
    min_score: float,
    filter: Mapping[str, object] | None,
) -> str:
    """A KV key that changes whenever the question, the corpus or the retrieval settings do."""
    material = json.dumps(
        [normalize_question(question), corpus_version, model, top_k, min_score, filter or {}],
        sort_keys=True,
        ensure_ascii=False,
    )
    digest = hashlib.sha256(material.encode()).hexdigest()
    return f"answer:{tenant}:{digest}"
