"""Local mode: embedded adapters and the one-command dev stack (never uploaded to Cloudflare)."""
