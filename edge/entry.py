"""The Cloudflare Worker entry: hand each request to the ASGI app with the Worker's env."""

from workers import DurableObject, WorkerEntrypoint

from edge.adapters.cloudflare import build_cloudflare_ports, env_mapping, to_py
from edge.adapters.cloudflare.job_ledger import JobLedgerCell
from edge.app import create_app
from edge.handlers import handle_batch, reconcile
from edge.settings import Settings

# Built on the first request, not at import: Cloudflare snapshots module state at deploy,
# and the env (secrets, bindings) only exists per request.
_app = None


def _app_for(env):  # type: ignore[no-untyped-def]
    global _app
    if _app is None:
        settings = Settings.from_env(env_mapping(env))
        _app = create_app(settings, build_cloudflare_ports(env, settings))
        # A job's event stream must not be woken from the request that changed the job:
        # it would resume in that request's I/O context (edge.jobs.events.JobChanges).
        _app.state.jobs.changes.enabled = False
    return _app


class Default(WorkerEntrypoint):  # type: ignore[misc]
    async def fetch(self, request):  # type: ignore[no-untyped-def]
        import asgi  # provided by the Workers runtime SDK, importable only inside workerd

        return await asgi.fetch(_app_for(self.env), request.js_object, self.env)

    async def queue(self, batch, env=None, ctx=None):  # type: ignore[no-untyped-def]
        # env and ctx arrive as None for class-based entrypoints; bindings are on self.env.
        await handle_batch(_app_for(self.env), [_Message(m) for m in batch.messages])

    async def scheduled(self, controller, env=None, ctx=None):  # type: ignore[no-untyped-def]
        await reconcile(_app_for(self.env))


class _Message:
    """A Queues message with its body converted to plain Python at this boundary."""

    def __init__(self, message):  # type: ignore[no-untyped-def]
        self._message = message
        self.body = to_py(message.body)

    def ack(self):  # type: ignore[no-untyped-def]
        self._message.ack()


class JobLedger(DurableObject):  # type: ignore[misc]
    """One job's authoritative state (wrangler.toml binds it as `JOBS`; SQLite-backed).

    Its methods are called over RPC by `DurableObjectJobLedger`. The record goes when its
    job expires: an alarm at `expires_at` deletes it (or, if a change moved the expiry on
    since, sets the alarm again), so finished jobs do not keep storage forever.
    """

    def __init__(self, ctx, env):  # type: ignore[no-untyped-def]
        super().__init__(ctx, env)
        self._cell = JobLedgerCell(ctx.storage.sql)

    async def create(self, record_json, now):  # type: ignore[no-untyped-def]
        answer = self._cell.create(record_json, now)
        await self._arm()
        return answer

    async def read(self, now):  # type: ignore[no-untyped-def]
        return self._cell.read(now)

    async def change(self, change_json, now):  # type: ignore[no-untyped-def]
        return self._cell.change(change_json, now)

    async def alarm(self, alarm_info=None):  # type: ignore[no-untyped-def]
        import js  # only inside workerd; the clock a Durable Object has

        expires_at = self._cell.expires_at()
        if expires_at is not None and expires_at * 1000 > js.Date.now():
            await self._arm()
        else:
            # All of the object's storage (table and alarm) goes; the next `create`, if a
            # reused key brings one, makes the table again.
            await self.ctx.storage.deleteAll()

    async def _arm(self):  # type: ignore[no-untyped-def]
        expires_at = self._cell.expires_at()
        if expires_at is not None:
            await self.ctx.storage.setAlarm(int(expires_at * 1000))
