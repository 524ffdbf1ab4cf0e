"""The Cloudflare Worker entry: hand each request to the ASGI app with the Worker's env."""

from workers import WorkerEntrypoint

from edge.adapters.cloudflare import build_cloudflare_ports, env_mapping
from edge.app import create_app
from edge.settings import Settings

# Built on the first request, not at import: Cloudflare snapshots module state at deploy,
# and the env (secrets, bindings) only exists per request.
_app = None


def _app_for(env):  # type: ignore[no-untyped-def]
    global _app
    if _app is None:
        settings = Settings.from_env(env_mapping(env))
        _app = create_app(settings, build_cloudflare_ports(env, settings))
    return _app


class Default(WorkerEntrypoint):  # type: ignore[misc]
    async def fetch(self, request):  # type: ignore[no-untyped-def]
        import asgi  # provided by the Workers runtime SDK, importable only inside workerd

        return await asgi.fetch(_app_for(self.env), request.js_object, self.env)
