"""The edgecrew edge: one ASGI app served by a Cloudflare Python Worker or by uvicorn."""
