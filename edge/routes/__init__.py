"""HTTP routes: parse, call the knowledge base, answer."""
