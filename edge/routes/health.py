from __future__ import annotations

from fastapi import APIRouter

from edge.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the app is up (it does not call any dependency)."""
    return Health(status="ok")
