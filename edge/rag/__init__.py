"""Retrieval-augmented answers: pure helpers (chunking, prompt, cache key) and the service."""
