"""A stand-in for workerd's internal `_cloudflare` package, for the real-Pyodide tests.

workerd ships `_cloudflare` inside its Python runtime; it is on no package index. The
Workers SDK's `.pth` file imports its patches only when `_cloudflare` exists, and those
patches are what make FastAPI work in a Worker (sync dependencies run inline instead of
on a thread the runtime cannot start). These few modules implement just the calls the
SDK makes, so the SDK's own patches run here unmodified, and `entropy_patches`, the two
ends of the import phase that workerd runs around the Worker's top level.
"""
