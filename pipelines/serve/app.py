"""The search service on Ray Serve: `GET /search?q=...&k=10`, `GET /healthz`, the page at `GET /` and one frame
of each video at `GET /thumbnail/<video_id>`.

Each replica loads the text encoder once (bf16 where the hardware computes it) and follows the index
(`state.SearchState`). The queries that reach a replica while it computes a pass share the next pass of the text
encoder and one index query (`gather.Gatherer`), computed off the event loop, which meanwhile gathers the next batch;
a query reaching an idle replica waits for nothing. `build({"index": ...,
"replicas": N})` makes the application, for `tempme serve` and for a RayService's `import_path:
pipelines.serve.app:build`.
"""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from pipelines.serve.gather import Gatherer
from pipelines.serve.options import ServeOptions
from pipelines.serve.page import PAGE
from pipelines.serve.state import BadQuery, SearchState, Unavailable, parse_query
from tempme.errors import UserError

BATCH = 16              # queries gathered into one pass at most
BATCH_WAIT_S = 0.005    # how long a pass that follows another waits for the clients just answered
api = FastAPI(title="TempMe video search", docs_url=None, redoc_url=None)


def _error(status: int, err: Exception) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=status)


@serve.deployment(ray_actor_options={"num_cpus": 1}, health_check_period_s=10)
@serve.ingress(api)
class SearchService:
    def __init__(self, options: dict):
        self.state = SearchState(ServeOptions(**options))
        self._answer = Gatherer(self.state.search_many, BATCH, BATCH_WAIT_S)

    def check_health(self) -> None:
        """Serve's own health check: the replica is alive even while its index is unavailable (503s say so)."""

    @api.get("/", response_class=HTMLResponse)
    def page(self) -> str:
        return PAGE

    @api.get("/healthz")
    def healthz(self):
        try:
            return self.state.health()
        except Unavailable as err:
            return _error(503, err)

    @api.get("/search")
    async def search(self, q: str | None = None, k: str | None = None):
        try:
            return JSONResponse(await self._answer(parse_query(q, k)))    # as it is: no re-encoding by FastAPI
        except BadQuery as err:
            return _error(400, err)
        except Unavailable as err:
            return _error(503, err)

    @api.get("/thumbnail/{video_id}")
    def thumbnail(self, video_id: str, t: float | None = None):
        try:
            jpeg = self.state.thumbnail(video_id, t)
        except Unavailable as err:
            return _error(503, err)
        if jpeg is None:
            return _error(404, LookupError(f"no video {video_id!r} in the index"))
        # the page asks for it with the index version (`?v=`): what that URL names never changes
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400, immutable"})


def build(args: dict) -> serve.Application:
    """The application: `args` has `index` and optionally `replicas`, `replica_cpus` (Ray gives a replica's torch
    as many threads), `tracking_uri`, `precision`, `refresh_s`."""
    args = dict(args)
    replicas, cpus = int(args.pop("replicas", 1)), int(args.pop("replica_cpus", 1))
    if replicas < 1 or cpus < 1:
        raise UserError(f"replicas and replica_cpus must be >= 1, got {replicas} and {cpus}")
    options = ServeOptions(**args)
    return SearchService.options(num_replicas=replicas, ray_actor_options={"num_cpus": cpus}).bind(vars(options))
