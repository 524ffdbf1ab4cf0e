"""The demo corpus: the project's own documentation, ingested for the dev tenant."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def demo_documents(root: Path = REPO_ROOT) -> list[dict[str, Any]]:
    """README.md and docs/*.md as API documents, ids from their file names."""
    paths = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [file_document(path, "docs", root) for path in paths if path.is_file()]


def file_document(path: Path, source: str, root: Path | None = None) -> dict[str, Any]:
    """One API document from a text file: id from its name, its path as metadata."""
    shown = path.relative_to(root) if root else path
    stem = re.sub(r"[^A-Za-z0-9._:-]", "-", path.stem.lower()).strip("-.") or "document"
    return {
        "id": stem[:128],
        "text": path.read_text(encoding="utf-8"),
        "metadata": {"source": source, "path": str(shown)[-256:]},
    }


def ingest_documents(
    base_url: str, key: str, documents: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """POST the documents in one request; the edge answers with chunk counts."""
    response = httpx.post(
        f"{base_url}/v1/documents",
        json={"documents": documents},
        headers={"Authorization": f"Bearer {key}"},
        timeout=300,
    )
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["documents"]
    return result
