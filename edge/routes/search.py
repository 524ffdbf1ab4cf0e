from __future__ import annotations

from fastapi import APIRouter

from edge.routes.deps import JSON_BODY, KEYED, UNAVAILABLE, JsonBody, Knowledge, Tenant
from edge.schemas import Match, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["knowledge base"], responses={**KEYED, **UNAVAILABLE})


@router.post("/search", response_model=SearchResponse, dependencies=[JsonBody], responses=JSON_BODY)
async def search(body: SearchRequest, tenant: Tenant, kb: Knowledge) -> SearchResponse:
    """The chunks closest to the query, best first."""
    matches, timings = await kb.search(tenant, body.query, top_k=body.top_k, filter=body.filter)
    return SearchResponse(matches=[Match(**m) for m in matches], timings_ms=timings)
