"""Jobs: long crew runs handed to the orchestrator, tracked in KV, reported by webhooks."""
