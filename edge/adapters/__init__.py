"""Adapters that the Worker can load (Cloudflare bindings, OpenAI-compatible HTTP)."""
