"""The sink's HTTP server: POST / takes events, GET /healthz and /stats; the sink started on a root and served
by uvicorn until SIGTERM or SIGINT, with the limits uvicorn's own settings give.

An event's parsing (its JSON, its images' base64) runs on a worker thread,
one event at a time, so that a large event never keeps /healthz and the other
connections waiting (an event of up to INLINE_PARSE_BYTES is parsed on the
loop: the hop would cost more); what the sink keeps (the pending table, the
batch, the counts) is changed on the server's event loop thread alone. A batch
written to storage holds up the next events for the length of that write,
which is the back pressure a busy predictor gets. Bodies are bounded here: one
by --max-event-mb, those arriving at once by ARRIVING_EVENTS of it, each by
BODY_SECONDS.

Connections and headers are bounded by uvicorn's settings (server_config), as
its h11 protocol applies them; what they do not cover is said where it
matters:
- --max-connections is uvicorn's limit_concurrency (plus one: uvicorn counts the
  connection asking). A request that finds more connections open is answered
  503 by uvicorn once its headers are whole; a connection that never sends
  them is not refused, and holds its descriptor.
- MAX_HEADER_BYTES is h11's max_incomplete_event_size: headers still incomplete
  above it are answered 400 by uvicorn and the connection closed. h11 checks
  only headers it has not seen the end of, so headers arriving in pieces may
  pass it by up to one read (asyncio reads up to 256 KiB at a time).
- --header-seconds is uvicorn's timeout_keep_alive: an idle connection after an
  answer is closed after it. uvicorn has no timer on a request's line and
  headers: a client sending them slowly, or not at all, holds its connection
  until it closes it. Slow clients are the proxy's to cut off (KServe's agent
  is the sink's one sender; a mesh's Envoy in front of the Service).
uvicorn answers these 400s and 503s itself, logged as its own warning lines:
they are not in /stats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import posixpath
import signal
import time

from contract import layout
from contract.errors import FAILED, first_line
from traffic import spans
from traffic.lock import hold_sink_lock
from traffic.pairing import TrafficSink, VersionSource
from traffic.reasons import BUSY, CLIENT_GONE, INTERNAL, TOO_LARGE, TOO_SLOW, Refused
from traffic.settings import SinkSettings

STATS_PATHS = ("/stats", "/metrics")
HEALTH_PATH = "/healthz"
# Event bodies arriving at once, at most, as multiples of max_event_mb: each connection holds its body until it is
# whole, so many large or slow senders would otherwise hold max_event_mb each, without bound.
ARRIVING_EVENTS = 4
BODY_SECONDS = 30.0  # a body still arriving after this holds its share of that bound for nothing: refused
# Bodies up to this size are parsed on the event loop (well under a millisecond): the hop to a worker thread costs
# more than that, a quarter of the sink's CPU time per event of one photo.
INLINE_PARSE_BYTES = 64 * 2**10
# The request line and headers of a request, at most: uvicorn's (h11's) own default is 16 KiB. Set here so that the
# limit is ours and said (module docstring), with room for a proxy's or a mesh's extra headers.
MAX_HEADER_BYTES = 64 * 2**10
HEALTH_CONNECTIONS = 16  # the health port's own bound: probes come a few a minute

logger = logging.getLogger(__name__)


def start(root: str, settings: SinkSettings) -> TrafficSink:
    """The sink of a pipeline root, after removing the staging folders a killed sink left (their batch was
    lost). The caller has checked that `root` is the pipeline's. SinkBusyError, nothing removed, while another
    sink records there."""
    where = layout.RunLayout(str(root))
    traffic_root = where.traffic_root
    lock = hold_sink_lock(traffic_root)
    for name in spans.remove_staging(traffic_root):
        logger.warning("traffic sink: removed %s, the open batch of a sink that was killed (its images are lost)",
                       posixpath.join(traffic_root, name))
    for line in spans.move_incomplete_aside(traffic_root):
        logger.warning("traffic sink: %s", line)
    sink = TrafficSink(traffic_root, settings, VersionSource(where.serving_dir))
    sink.lock = lock  # released with the process
    return sink


class _Arriving:
    """The bytes of event bodies held while they arrive, across connections, and their bound."""

    def __init__(self, limit: int):
        self.limit, self.bytes = limit, 0


async def _body(request, limit: int, arriving: _Arriving, taken: list[int]) -> bytes:
    """The body, counted into `arriving` (and `taken`, for the caller to give back) as it arrives."""
    declared = request.headers.get("content-length")
    declared = int(declared) if declared is not None and declared.isdigit() else None
    if declared is not None and declared > limit:
        raise Refused(TOO_LARGE, f"{declared} bytes, above the limit of {limit}", status=413)
    if declared is not None:
        # Its whole size taken before a byte is read: an event let in is never refused halfway because others
        # arrived beside it, and a burst is refused by the events beyond the bound, each before its body.
        _take(arriving, declared, taken)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(TOO_LARGE, f"more than the limit of {limit} bytes", status=413)
        if declared is None:  # chunked: its size is known only as it arrives
            _take(arriving, len(chunk), taken)
        chunks.append(chunk)
    return b"".join(chunks)


def _take(arriving: _Arriving, size: int, taken: list[int]) -> None:
    if arriving.bytes + size > arriving.limit:
        raise Refused(BUSY, f"{arriving.bytes} bytes of other events are arriving (at most {arriving.limit})",
                      status=503)
    arriving.bytes += size
    taken[0] += size


async def _whole_body(request, limit: int, arriving: _Arriving, taken: list[int]) -> bytes:
    try:
        return await asyncio.wait_for(_body(request, limit, arriving, taken), BODY_SECONDS)
    except asyncio.TimeoutError:
        raise Refused(TOO_SLOW, f"not whole after {BODY_SECONDS:g} s", status=408) from None


def make_app(sink: TrafficSink, tick_seconds: float = 1.0):
    """The ASGI application: POST / takes events; GET /healthz and /stats."""
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    limit = int(sink.settings.max_event_mb * 2**20)

    arriving = _Arriving(ARRIVING_EVENTS * limit)
    # One event parsed at a time, off the event loop: what parsing holds (an event's JSON as Python objects,
    # several times its bytes) stays that of one event, as when it ran on the loop.
    parsing = anyio.CapacityLimiter(1)

    async def events(request):
        taken = [0]
        try:
            try:
                body = await _whole_body(request, limit, arriving, taken)
            except ClientDisconnect:
                # The client went away mid-body (or uvicorn answered its body 400, as no HTTP, and closed the
                # connection): nothing to answer; counted once, said in one line, not uvicorn's traceback.
                sink.received += 1
                sink.refuse(Refused(CLIENT_GONE, "the connection closed before the body was whole"))
                return Response(status_code=400)
            except Refused as refusal:
                sink.received += 1
                sink.refuse(refusal)
                return JSONResponse({"refused": refusal.reason, "detail": refusal.detail}, status_code=refusal.status)
            sink.received += 1
            try:
                if len(body) <= INLINE_PARSE_BYTES:
                    parsed = sink.parse(request.headers, body)
                else:
                    parsed = await anyio.to_thread.run_sync(sink.parse, dict(request.headers), body, limiter=parsing)
                return JSONResponse(sink.take(parsed))
            except Refused as refusal:
                sink.refuse(refusal)
                return JSONResponse({"refused": refusal.reason, "detail": refusal.detail}, status_code=refusal.status)
        except Exception as error:  # unforeseen: counted, said once in a while in one line, answered 500, never a
            # traceback (the sender retries; the sink goes on with the next event)
            refusal = Refused(INTERNAL, first_line(error, with_type=True)[:300], status=500)
            sink.refuse(refusal)
            return JSONResponse({"refused": refusal.reason, "detail": refusal.detail}, status_code=500)
        finally:
            arriving.bytes -= taken[0]

    async def health(request):
        return JSONResponse({"ok": True})

    async def stats(request):
        return JSONResponse(sink.stats())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async def ticking():
            while True:
                await asyncio.sleep(tick_seconds)
                sink.tick()

        task = asyncio.get_running_loop().create_task(ticking())
        try:
            yield
        finally:
            task.cancel()
            sink.close()

    routes = [Route("/", events, methods=["POST"]), Route(HEALTH_PATH, health, methods=["GET"])]
    routes += [Route(path, stats, methods=["GET"]) for path in STATS_PATHS]
    return Starlette(routes=routes, lifespan=lifespan)


def server_config(sink: TrafficSink, port: int, tick_seconds: float = 1.0, **options):
    """The uvicorn configuration the sink serves with (`options`: more of uvicorn.Config's)."""
    import uvicorn

    settings = sink.settings
    # h11 by name: h11_max_incomplete_event_size applies to it alone ("auto" takes httptools where installed).
    # limit_concurrency counts the connection asking among those open: one more lets --max-connections be served.
    return uvicorn.Config(make_app(sink, tick_seconds), host=settings.host, port=port, log_level="warning",
                          access_log=False, lifespan="on", http="h11", limit_concurrency=settings.max_connections + 1,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_keep_alive=settings.header_seconds,
                          **options)


def health_config(host: str, port: int):
    """A second server, for Kubernetes' probes alone: GET /healthz on a port of its own, whose connections no
    flood of the events' port can take (beyond --max-connections that port answers 503)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route(HEALTH_PATH, health, methods=["GET"])])
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                          limit_concurrency=HEALTH_CONNECTIONS, timeout_keep_alive=5)


def serve(sink: TrafficSink, port: int, health_port: int | None = None,
          refusal: logging.Handler | None = None) -> None:
    """Runs the HTTP server (and the health server, with `health_port`) until SIGTERM or SIGINT, then publishes
    the open batch. `refusal` is given uvicorn's errors (why it cannot listen, before it exits)."""
    import uvicorn

    config = server_config(sink, port, timeout_graceful_shutdown=20)
    health = health_config(sink.settings.host, health_port) if health_port is not None else None
    if refusal is not None:  # after the configurations, each of which sets uvicorn's loggers' handlers anew
        logging.getLogger("uvicorn.error").addHandler(refusal)
    _raise_descriptor_limit()
    logging.getLogger("asyncio").addFilter(_AcceptFaults())
    # uvicorn shuts down on the signal, then raises it again under the handler it found: under these no-op
    # handlers a stop the sink was asked for ends here, and the command says what it recorded, exit 0.
    handled = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.signal(sig, _ignore) for sig in handled}
    try:
        if health_port is None:
            uvicorn.Server(config).run()
        else:
            asyncio.run(_serve_with_health(uvicorn.Server(config), uvicorn.Server(health)))
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


async def _serve_with_health(events, health) -> None:
    """The health server first, the events' server after it: each takes SIGTERM and SIGINT while it runs, the
    events' over the health one's, which it hands the signal back to as it stops; a stop without one stops the
    health server too. SystemExit where either cannot listen."""
    probes = asyncio.get_running_loop().create_task(_listening(health))
    while not health.started and not probes.done():
        await asyncio.sleep(0.02)
    if probes.done():
        probes.result()
        raise SystemExit(FAILED)  # it stopped before it listened: uvicorn has logged why
    try:
        await events.serve()
    finally:
        health.should_exit = True
        await probes


def _raise_descriptor_limit() -> None:
    """The soft limit on open files up to the hard one: uvicorn accepts every connection (a silent one holds
    its descriptor until its client closes), and the health port needs descriptors of its own."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


class _AcceptFaults(logging.Filter):
    """asyncio logs each failed accept() with its traceback, thousands a second while the process is out of
    descriptors: one line every 10 s instead, with how many there were."""

    def __init__(self, every_seconds: float = 10.0):
        super().__init__()
        self.every, self.last, self.count = every_seconds, -math.inf, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "socket.accept() out of system resource" not in str(record.msg):
            return True
        self.count += 1
        now = time.monotonic()
        if now - self.last < self.every:
            return False
        error = record.exc_info[1] if record.exc_info else None
        record.msg, record.args, record.exc_info, record.exc_text = (
            "traffic sink: %d accept(s) failed since the last such line (%s): too many connections open; the "
            "others wait in the listening queue", (self.count, error or "out of descriptors"), None, None)
        self.last, self.count = now, 0
        return True


async def _listening(server) -> bool:
    """server.serve(); False where it could not listen. uvicorn raises SystemExit then, which a task would keep
    and asyncio print as a traceback when the task is dropped."""
    try:
        await server.serve()
    except SystemExit:
        return False
    return True


def _ignore(signum, frame) -> None:
    return None
