"""The traffic sink: KServe's inference logger events in, traffic spans (contract.traffic) out.

KServe's agent beside the predictor (spec.predictor.logger, mode all) POSTs
every request and every answered response (HTTP 200 only) as a CloudEvent
(pkg/logger of kserve/kserve): binary mode, the body as the client sent it or
as TF Serving answered, `ce-type` org.kubeflow.serving.inference.request or
.response, the same `ce-id` for a request and its response, `ce-time` when it
happened, and the extensions inferenceservicename, namespace, component,
endpoint, metadata and recordedtime. Its workers send concurrently and never
retry, so a response may come before its request, and an event the sink
refuses is gone.

The sink matches the two by id in a pending table bounded by count, bytes
and age, and gives each image of a request the response's score, the version
served (the response's model_version where the protocol has one, else the
version the root's serving config names) and the request's time. A request
is recorded whole or not at all: the sampling rate keeps a request by a hash
of its id. What it refuses (the reason is in the 4xx body) and what it loses
(a storage fault, a request whose response never came) is counted by reason,
logged and served at /stats; /healthz is for Kubernetes' probes.

An event's parsing (its JSON, its images' base64) runs on a worker thread,
one event at a time, so that a large event never keeps /healthz and the other
connections waiting (an event of up to INLINE_PARSE_BYTES is parsed on the
loop: the hop would cost more); what the sink keeps (the pending table, the batch, the
counts) is changed on the server's event loop thread alone. A batch written to
storage holds up the next events for the length of that write, which is the
back pressure a busy predictor gets. An event of more than --max-instances
images (or answers) is refused whole, as is an image that is empty.

The request line and headers of one request may hold MAX_HEADER_BYTES at
most, however they are split (KServe's logger sends a few hundred bytes of
them): a request above it, or one that is no HTTP, is answered 400 and its
connection closed before any event is read; the sink counts it under
UNREADABLE_HTTP and goes on serving. Headers not whole after --header-seconds
are answered 408, connections beyond --max-connections 503 (_protocol).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import posixpath
import signal
import time
from typing import Callable, Mapping

import tensorflow as tf
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException

from contract import features, layout, served, storage, traffic
from contract.errors import FAILED, BusyError, first_line, printable
from inference.sink_settings import SinkSettings

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
STATS_PATHS = ("/stats", "/metrics")
HEALTH_PATH = "/healthz"

# Why an event is refused (the counts are kept by these).
NOT_A_CLOUDEVENT = "not a CloudEvent"
WRONG_TYPE = "not an inference request or response"
TOO_LARGE = "too large"
BUSY = "too many events arriving at once"
TOO_SLOW = "body sent too slowly"
BAD_JSON = "bad JSON"
NOT_A_PREDICTION = "not a prediction request or response of this model"
BAD_BASE64 = "bad base64"
OTHER_SIGNATURE = "another signature than serving_default"
DUPLICATE = "duplicate event id"
EMPTY_IMAGE = "empty image"
TIME_OUT_OF_RANGE = "time out of range"
NOT_TEXT = "text that is not Unicode"
INTERNAL = "internal error"
TOO_MANY_INSTANCES = "too many images in one event"
UNREADABLE_HTTP = "unreadable HTTP request (malformed, or headers above the limit)"
SLOW_HEADERS = "request headers sent too slowly"
TOO_MANY_CONNECTIONS = "too many connections"
CLIENT_GONE = "connection closed mid-body"
MISMATCH = "response does not match its request"
# Why records are lost.
NO_RESPONSE = "no response in time"
NO_REQUEST = "response without its request in time"
PENDING_FULL = "pending table full"
SHUTDOWN = "shut down before the response came"

# Set in a request's ASGI scope when the protocol counted it (a body that is no HTTP) before its application ends.
COUNTED_SCOPE_KEY = "cats_vs_dogs.counted"
# Requests (or responses) waiting for the other half, at most: their ids and scores alone stay within tens of MB.
MAX_WAITING = 100_000
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
# What Python holds per waiting image or score beside the image's bytes (its object and its slot in a list): a
# request of a million two-byte images holds some 50 MB, not 2 MB.
ITEM_BYTES = 64

logger = logging.getLogger(__name__)


class Refused(Exception):
    """An event the sink does not take: `reason` is counted, `detail` says what exactly. Internal: answered
    with its HTTP status; it never ends the command."""

    def __init__(self, reason: str, detail: str, status: int = 400):
        detail = printable(detail)  # it quotes what the sender sent, and goes into a log line
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.status = reason, detail, status


@dataclasses.dataclass
class Event:
    kind: str  # REQUEST_TYPE or RESPONSE_TYPE
    id: str
    time_ms: int
    payload: object  # the parsed JSON body


def parse_event(headers: Mapping[str, str], body: bytes, now_ms: int) -> Event:
    """The CloudEvent of an HTTP message, binary or structured mode (the cloudevents SDK's reading of it)."""
    headers = {name.lower(): value for name, value in headers.items()}
    try:
        _require_attributes(headers, body)
        event = ce_http.from_http_event(ce_http.HTTPMessage(headers=headers, body=body))
    except (BaseCloudEventException, ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise Refused(NOT_A_CLOUDEVENT, first_line(error)[:300]) from None
    kind = event.get_type()
    if kind not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise Refused(WRONG_TYPE, f"ce-type {printable(str(kind))[:100]!r}")
    time_ms = _event_time_ms(event.get_time(), now_ms)
    event_id = str(event.get_id())
    try:
        event_id.encode("utf-8")  # JSON's \\u escapes can spell a lone surrogate, which no answer can carry
    except UnicodeEncodeError as error:
        raise Refused(NOT_TEXT, f"its id holds {printable(event_id[error.start])} at index {error.start}, a lone "
                                "surrogate") from None
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise Refused(BAD_JSON, first_line(error)[:200]) from None
    if not isinstance(data, dict):
        raise Refused(NOT_A_PREDICTION, "the body is not a JSON object")
    return Event(kind, event_id, time_ms, data)


def _event_time_ms(moment, now_ms: int) -> int:
    """The event's time: the sender's clock, but never ahead of the sink's (windows are the newest records by time,
    and a record stamped in the future would stay in every window until then); the sink's when it gives none.
    Refused when it is before traffic.EARLIEST_TIME_MS."""
    if moment is None:
        return now_ms
    try:
        time_ms = int(moment.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        time_ms = None
    if time_ms is None or time_ms < traffic.EARLIEST_TIME_MS:
        raise Refused(TIME_OUT_OF_RANGE, f"ce-time {printable(moment.isoformat())[:60]} is before "
                                         f"{traffic.time_text(traffic.EARLIEST_TIME_MS)}: the sender's clock is wrong")
    return min(time_ms, now_ms)


def _require_attributes(headers: dict[str, str], body: bytes) -> None:
    """ValueError naming a required attribute the event lacks: the SDK would make up an id (and a time) for an
    event without one, and a made-up id matches nothing."""
    if any(name.startswith("ce-") for name in headers):
        given = {name[3:] for name in headers if name.startswith("ce-")}
    else:
        document = json.loads(body)
        given = set(document) if isinstance(document, dict) else set()
    missing = [name for name in ("specversion", "id", "type", "source") if name not in given]
    if missing:
        raise ValueError(f"no {', '.join(missing)} attribute")


def _image_of(instance, where: str) -> bytes:
    """An instance of TF Serving's REST API for the input image_bytes: {"b64": ...} or {"image_bytes": {"b64":
    ...}}."""
    if isinstance(instance, dict) and set(instance) == {"image_bytes"}:
        instance = instance["image_bytes"]
    if not (isinstance(instance, dict) and set(instance) == {"b64"} and isinstance(instance["b64"], str)):
        raise Refused(NOT_A_PREDICTION, f"{where} is not an image ({{\"b64\": ...}} or {{\"image_bytes\": "
                                        "{\"b64\": ...}})")
    try:
        image = base64.b64decode(instance["b64"], validate=True)
    except (binascii.Error, ValueError) as error:
        raise Refused(BAD_BASE64, f"{where}: {first_line(error)}") from None
    return image  # empty: the model answers it as no image, and the other images of its request are kept


def _at_most(count: int, limit: int | None, what: str) -> None:
    if limit is not None and count > limit:
        raise Refused(TOO_MANY_INSTANCES, f"{count} {what}, above the limit of {limit} (--max-instances)",
                      status=413)


def request_images(payload: dict, max_instances: int | None = None) -> list[bytes]:
    """The images of a TF Serving REST predict request: row format {"instances": [...]} or columnar
    {"inputs": [...]} / {"inputs": {"image_bytes": [...]}}; at most `max_instances` of them."""
    signature = payload.get("signature_name", "serving_default")
    if signature != "serving_default":
        raise Refused(OTHER_SIGNATURE, f"signature_name {printable(str(signature))[:80]!r}")
    if "instances" in payload:
        key, instances = "instances", payload["instances"]
    elif "inputs" in payload:
        key, instances = "inputs", payload["inputs"]
        if isinstance(instances, dict) and set(instances) == {"image_bytes"}:
            instances = instances["image_bytes"]
    else:
        raise Refused(NOT_A_PREDICTION, "neither \"instances\" nor \"inputs\"")
    if not isinstance(instances, list) or not instances:
        raise Refused(NOT_A_PREDICTION, f"\"{key}\" is not a list of images")
    _at_most(len(instances), max_instances, "images")
    return [_image_of(instance, f"{key}[{index}]") for index, instance in enumerate(instances)]


def _score(answer, where: str) -> float:
    if isinstance(answer, dict):
        if answer.get(features.VALID_OUTPUT, True) is False:
            return math.nan
        answer = answer.get(features.PROBABILITY_OUTPUT)
    elif isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    if answer is None:
        return math.nan
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        raise Refused(NOT_A_PREDICTION, f"{where} holds no {features.PROBABILITY_OUTPUT}")
    score = float(answer) if isinstance(answer, float) or abs(answer) <= 1 else math.inf
    if not (math.isnan(score) or 0 <= score <= 1):
        raise Refused(NOT_A_PREDICTION, f"{where}: {features.PROBABILITY_OUTPUT} {printable(str(answer))[:40]} is "
                                        "not a probability")
    return score


def response_scores(payload: dict, max_instances: int | None = None) -> tuple[list[float], int | None]:
    """(a score per image, the version the response names or None) of a TF Serving REST predict response:
    {"predictions": [...]} (row) or {"outputs": ...} (columnar); at most `max_instances` answers."""
    named = payload.get("model_version")
    version = layout.version_number(str(named)) if isinstance(named, (int, str)) and not isinstance(named, bool) \
        else None
    if "predictions" in payload and isinstance(payload["predictions"], list):
        answers = payload["predictions"]
    elif "outputs" in payload:
        outputs = payload["outputs"]
        if isinstance(outputs, dict) and isinstance(outputs.get(features.PROBABILITY_OUTPUT), list):
            valid = outputs.get(features.VALID_OUTPUT, [True] * len(outputs[features.PROBABILITY_OUTPUT]))
            if not isinstance(valid, list) or len(valid) != len(outputs[features.PROBABILITY_OUTPUT]):
                raise Refused(NOT_A_PREDICTION, f"\"outputs\" holds a {features.VALID_OUTPUT} that is not a list "
                                                f"as long as its {features.PROBABILITY_OUTPUT}")
            answers = [{features.PROBABILITY_OUTPUT: p, features.VALID_OUTPUT: v}
                       for p, v in zip(outputs[features.PROBABILITY_OUTPUT], valid)]
        elif isinstance(outputs, list):
            answers = outputs
        else:
            raise Refused(NOT_A_PREDICTION, f"\"outputs\" holds no {features.PROBABILITY_OUTPUT}")
    else:
        raise Refused(NOT_A_PREDICTION, "neither \"predictions\" nor \"outputs\"")
    _at_most(len(answers), max_instances, "answers")
    return [_score(answer, f"answer {index}") for index, answer in enumerate(answers)], version


@dataclasses.dataclass
class Parsed:
    """An event as TrafficSink.parse read it: a request's images or a response's answers (none when sampled
    out)."""

    event: Event
    sampled: bool = True
    images: list[bytes] | None = None
    scores: list[float] | None = None
    version: int | None = None


@dataclasses.dataclass
class _Waiting:
    since: float  # monotonic
    time_ms: int = 0
    images: list[bytes] | None = None  # a request's
    scores: list[float] | None = None  # a response's
    version: int | None = None
    id_bytes: int = 0  # its event id's, the table's key: an id may be kilobytes long

    @property
    def count(self) -> int:
        """A request's images, or a response's answers."""
        return len(self.images) if self.images is not None else len(self.scores)

    @property
    def size(self) -> int:
        """The memory it holds while it waits, as the pending table counts it."""
        return (sum(map(len, self.images)) if self.images is not None else 0) + ITEM_BYTES * self.count \
            + self.id_bytes


class VersionSource:
    """The version the root's serving config names, read again at most every `refresh_seconds`."""

    def __init__(self, serving_dir: str, refresh_seconds: float = 10.0, clock=time.monotonic):
        self.serving_dir, self.refresh_seconds, self._clock = serving_dir, refresh_seconds, clock
        self._read_at: float | None = None
        self._version: int | None = None

    def __call__(self) -> int | None:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self.refresh_seconds:
            self._read_at = now
            try:
                config = served.read_config(self.serving_dir)
                self._version = config.version if config else max(served.complete_versions(self.serving_dir),
                                                                  default=None)
            except (served.ConfigError, storage.UnreadableFileError, OSError, tf.errors.OpError) as error:
                logger.warning("traffic sink: the served version cannot be read (%s): recorded as unknown",
                               first_line(error))
                self._version = None
        return self._version


class TrafficSink:
    """The sink's state: the pending table, the writer and the counts. Not thread-safe: changed on one event loop
    (parse alone may run elsewhere)."""

    def __init__(self, traffic_root: str, settings: SinkSettings, served_version: Callable[[], int | None],
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.lock: int | None = None  # start(): the descriptor holding the sink lock
        self.writer = traffic.TrafficWriter(traffic_root, settings.batch_size, settings.batch_seconds,
                                            records_per_file=min(settings.batch_size, 256), clock=clock)
        self._served_version = served_version
        self._clock = clock
        self._requests: collections.OrderedDict[str, _Waiting] = collections.OrderedDict()
        self._responses: collections.OrderedDict[str, _Waiting] = collections.OrderedDict()
        self._pending_bytes = 0
        self.received = 0
        self.images_received = 0
        self.refused: collections.Counter = collections.Counter()
        self.sampled_out = 0
        self._last_said: dict[str, float] = {}
        self._unsaid: collections.Counter = collections.Counter()

    # --- events --------------------------------------------------------------------------------------------------

    def receive(self, headers: Mapping[str, str], body: bytes) -> dict:
        """Takes one event; returns what to answer. Refused for an event it does not take (counted)."""
        self.received += 1
        try:
            return self.take(self.parse(headers, body))
        except Refused as refusal:
            self.refuse(refusal)
            raise

    def parse(self, headers: Mapping[str, str], body: bytes) -> Parsed:
        """An event read: its JSON, and its images or answers unless sampling leaves it out. Reads the settings
        alone, so safe on any thread; Refused (to be counted by the caller, on the event loop)."""
        event = parse_event(headers, body, int(time.time() * 1000))
        if not self._sampled(event.id):
            return Parsed(event, sampled=False)
        if event.kind == REQUEST_TYPE:
            return Parsed(event, images=request_images(event.payload, self.settings.max_instances))
        scores, version = response_scores(event.payload, self.settings.max_instances)
        return Parsed(event, scores=scores, version=version)

    def refuse(self, refusal: Refused) -> None:
        self.refused[refusal.reason] += 1
        self.writer.note_refused(refusal.reason)
        self._say(refusal.reason, f"traffic sink: refused an event: {refusal}")

    def take(self, parsed: Parsed) -> dict:
        """Matches a parsed event with its other half and records the pair; on the event loop. Refused for an
        event it does not take (not counted here)."""
        event = parsed.event
        if not parsed.sampled:
            if event.kind == REQUEST_TYPE:
                self.sampled_out += 1
                self.writer.note_sampled_out()
            return {"id": event.id, "sampled_out": True}
        if event.kind == REQUEST_TYPE:
            if event.id in self._requests:
                raise Refused(DUPLICATE, f"a request with ce-id {printable(event.id)[:80]!r} is waiting already")
            waiting = _Waiting(self._clock(), time_ms=event.time_ms, images=parsed.images, id_bytes=len(event.id))
            self.images_received += len(waiting.images)
            answer = self._responses.pop(event.id, None)
            if answer is None:
                self._wait(self._requests, event.id, waiting)
                return {"id": event.id, "images": len(waiting.images), "waiting_for": "response"}
            self._pending_bytes -= answer.size
            waiting.scores, waiting.version = answer.scores, answer.version
        else:
            scores, version = parsed.scores, parsed.version
            waiting = self._requests.pop(event.id, None)
            if waiting is None:
                if event.id in self._responses:
                    raise Refused(DUPLICATE, f"a response with ce-id {printable(event.id)[:80]!r} is waiting already")
                self._wait(self._responses, event.id, _Waiting(self._clock(), scores=scores, version=version,
                                                               id_bytes=len(event.id)))
                return {"id": event.id, "answers": len(scores), "waiting_for": "request"}
            self._pending_bytes -= waiting.size
            waiting.scores, waiting.version = scores, version
        return self._record(event.id, waiting)

    def _sampled(self, request_id: str) -> bool:
        if self.settings.sample_rate >= 1:
            return True
        digest = hashlib.sha256(request_id.encode("utf-8", "backslashreplace")).digest()
        return int.from_bytes(digest[:8], "big") < self.settings.sample_rate * 2**64

    def _wait(self, table: collections.OrderedDict, event_id: str, waiting: _Waiting) -> None:
        """Holds a request (or a response) for its other half; above the limits the oldest waiting, of requests
        and responses alike, is counted lost (the one just held stays: max_event_mb bounds it)."""
        table[event_id] = waiting
        self._pending_bytes += waiting.size
        while len(table) > MAX_WAITING:
            self._drop(table)
        limit = self.settings.pending_mb * 2**20
        while self._pending_bytes > limit:
            others = [t for t in (self._requests, self._responses) if t and not (t is table and len(t) == 1)]
            if not others:
                break
            self._drop(min(others, key=lambda t: next(iter(t.values())).since))

    def _drop(self, table: collections.OrderedDict) -> None:
        _, dropped = table.popitem(last=False)
        self._pending_bytes -= dropped.size
        self._lose(PENDING_FULL, dropped.count)

    def _record(self, request_id: str, waiting: _Waiting) -> dict:
        if len(waiting.scores) != len(waiting.images):
            self._lose(MISMATCH, len(waiting.images))
            raise Refused(MISMATCH, f"{len(waiting.scores)} answers for {len(waiting.images)} images")
        version = waiting.version if waiting.version is not None else self._served_version()
        version = traffic.UNKNOWN_VERSION if version is None else version
        kept = [(image, score) for image, score in zip(waiting.images, waiting.scores) if image]
        for image, score in kept:
            self.writer.add(traffic.TrafficRecord(image=image, score=score, version=version,
                                                  time_ms=waiting.time_ms, request_id=request_id,
                                                  origin=traffic.KSERVE_ORIGIN))
        answer = {"id": request_id, "recorded": len(kept)}
        if len(kept) < len(waiting.images):  # nothing to check drift on: counted per image, the others kept
            answer["skipped"] = {EMPTY_IMAGE: len(waiting.images) - len(kept)}
            self._lose(EMPTY_IMAGE, len(waiting.images) - len(kept))
        return answer

    def _lose(self, reason: str, records: int) -> None:
        self.writer.note_lost(reason, records)
        self._say(reason, f"traffic sink: lost {records} image(s): {reason}")

    def _say(self, reason: str, line: str, every_seconds: float = 10.0) -> None:
        """One log line per reason at most every `every_seconds`, with how many were not said since."""
        now = self._clock()
        if now - self._last_said.get(reason, -math.inf) < every_seconds:
            self._unsaid[reason] += 1
            return
        more = self._unsaid.pop(reason, 0)
        logger.warning("%s%s", line, f" (and {more} more like it since the last line)" if more else "")
        self._last_said[reason] = now

    # --- time ----------------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Expires what waited too long and publishes a batch that is old enough: every second or so."""
        deadline = self._clock() - self.settings.pending_seconds
        for table, reason in ((self._requests, NO_RESPONSE), (self._responses, NO_REQUEST)):
            while table and next(iter(table.values())).since <= deadline:
                _, waiting = table.popitem(last=False)
                self._pending_bytes -= waiting.size
                self._lose(reason, waiting.count)
        self.writer.flush_if_old()

    def close(self) -> None:
        """At shutdown: what still waits for its response is lost (said), the open batch is published."""
        waiting = sum(len(w.images) for w in self._requests.values())
        if waiting:
            self._lose(SHUTDOWN, waiting)
        self._requests.clear()
        self._responses.clear()
        self._pending_bytes = 0
        self.writer.flush(counts_too=True)
        logger.warning("traffic sink: stopped; %s", json.dumps(self.stats(), sort_keys=True))

    def stats(self) -> dict:
        written = self.writer.stats()
        return {"received": self.received, "images_received": self.images_received,
                "recorded": written["recorded"], "open_batch": written["open_batch"],
                "spans_published": written["spans_published"], "sampled_out": self.sampled_out,
                "refused": dict(self.refused), "lost": written["lost"],
                "waiting": {"requests": len(self._requests), "responses": len(self._responses),
                            "bytes": self._pending_bytes}}


# --- the HTTP server -------------------------------------------------------------------------------------------

class _Arriving:
    """The bytes of event bodies held while they arrive, across connections, and their bound."""

    def __init__(self, limit: int):
        self.limit, self.bytes = limit, 0


async def _body(request, limit: int, arriving: _Arriving, taken: list[int]) -> bytes:
    """The body, counted into `arriving` (and `taken`, for the caller to give back) as it arrives."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(TOO_LARGE, f"{declared} bytes, above the limit of {limit}", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(TOO_LARGE, f"more than the limit of {limit} bytes", status=413)
        if arriving.bytes + len(chunk) > arriving.limit:
            raise Refused(BUSY, f"{arriving.bytes} bytes of other events are arriving (at most {arriving.limit})",
                          status=503)
        arriving.bytes += len(chunk)
        taken[0] += len(chunk)
        chunks.append(chunk)
    return b"".join(chunks)


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
                # The client went away mid-body (or its body was no HTTP, answered 400 and counted by the
                # protocol): nothing to answer; counted once, said in one line, not uvicorn's traceback.
                if not request.scope.get(COUNTED_SCOPE_KEY):
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


SINK_LOCK = ".sink.lock"  # in the traffic folder: held by the one sink recording into it


class SinkBusyError(BusyError):
    """Another traffic sink records into the root's traffic folder; nothing was touched."""


def _hold_sink_lock(traffic_root: str):
    """Locally, an exclusive lock on <traffic>/.sink.lock held for the life of the process (the kernel releases
    it when the process dies, however it dies): a second sink would remove the first one's open batch as a killed
    sink's. SinkBusyError if another sink holds it. None on an object store: there the Deployment's one replica,
    replaced rather than rolled, is the guard."""
    if not storage.is_local(traffic_root):
        return None
    os.makedirs(traffic_root, exist_ok=True)
    fd = os.open(posixpath.join(traffic_root, SINK_LOCK), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK,
                 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SinkBusyError(f"another traffic sink records into {traffic_root} (it holds {SINK_LOCK}): one "
                                "sink per root; stop it first") from None
        raise
    return fd


def start(root: str, settings: SinkSettings) -> TrafficSink:
    """The sink of a pipeline root, after removing the staging folders a killed sink left (their batch was
    lost). The caller has checked that `root` is the pipeline's. SinkBusyError, nothing removed, while another
    sink records there."""
    where = layout.RunLayout(str(root))
    traffic_root = where.traffic_root
    lock = _hold_sink_lock(traffic_root)
    for name in traffic.remove_staging(traffic_root):
        logger.warning("traffic sink: removed %s, the open batch of a sink that was killed (its images are lost)",
                       posixpath.join(traffic_root, name))
    for line in traffic.move_incomplete_aside(traffic_root):
        logger.warning("traffic sink: %s", line)
    sink = TrafficSink(traffic_root, settings, VersionSource(where.serving_dir))
    sink.lock = lock  # released with the process
    return sink


def _raw_answer(transport, status: str, message: str) -> None:
    """Writes a whole HTTP answer and closes: for a connection h11 has no request of (none may be answered
    through it)."""
    body = message.encode("ascii", "replace")
    transport.write(f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                    f"content-length: {len(body)}\r\n\r\n".encode() + body)
    transport.close()


def _headers_too_large(buffered: bytes, data: bytes) -> bool:
    """Whether a request's line and headers, `buffered` and then `data`, do not end within MAX_HEADER_BYTES,
    whatever chunks they came in."""
    start = buffered + data[:MAX_HEADER_BYTES + 4]
    end = start.find(b"\r\n\r\n")
    return (end < 0 and len(start) > MAX_HEADER_BYTES) or end + 4 > MAX_HEADER_BYTES


def _protocol(sink: TrafficSink):
    """uvicorn's HTTP/1.1 protocol (h11), bounding what uvicorn does not: connections (its limit_concurrency
    answers only once headers are whole; beyond --max-connections one is answered 503 as it opens), the time
    headers take (its keep-alive timer runs only between requests; after --header-seconds: 408), and their
    size (h11 checks only incomplete headers, handed 64 KiB at a time: up to twice MAX_HEADER_BYTES passed).
    Each refusal is counted and said, as is each request uvicorn answers 400 itself (no HTTP)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    settings = sink.settings

    def refused(reason: str, detail: str) -> None:
        sink.received += 1
        sink.refuse(Refused(reason, detail))

    class BoundedProtocol(H11Protocol):
        headers_timer = None
        answered = False  # a request of this connection was answered: an idle one is uvicorn's keep-alive's

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > settings.max_connections:
                refused(TOO_MANY_CONNECTIONS, f"a connection beyond the {settings.max_connections} open; answered "
                                              "503 and closed")
                _raw_answer(transport, "503 Service Unavailable", "too many connections")
                return
            self._time_headers()

        def connection_lost(self, exc) -> None:
            self._stop_headers_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if _headers_too_large(self.conn.trailing_data[0], data):
                    self._stop_headers_timer()
                    refused(UNREADABLE_HTTP, f"request line and headers above {MAX_HEADER_BYTES} bytes; answered "
                                             "400 and its connection closed")
                    _raw_answer(self.transport, "400 Bad Request", "request headers too large")
                    return
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._stop_headers_timer()

        def on_response_complete(self) -> None:
            self.answered = True
            super().on_response_complete()
            if not self.transport.is_closing():
                self._time_headers()

        def send_400_response(self, msg: str) -> None:
            self._stop_headers_timer()
            if self.cycle is not None and not self.cycle.response_complete:
                self.scope[COUNTED_SCOPE_KEY] = True  # its application sees the client gone: counted here
            refused(UNREADABLE_HTTP, f"{msg} (no HTTP); answered 400 and its connection closed")
            super().send_400_response(msg)

        def _time_headers(self) -> None:
            self._stop_headers_timer()
            self.headers_timer = self.loop.call_later(settings.header_seconds, self._headers_late)

        def _stop_headers_timer(self) -> None:
            if self.headers_timer is not None:
                self.headers_timer.cancel()
                self.headers_timer = None

        def _headers_late(self) -> None:
            self.headers_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.answered and not self.conn.trailing_data[0]:  # idle between requests: nothing sent late
                self.transport.close()
                return
            refused(SLOW_HEADERS, f"request line and headers not whole after {settings.header_seconds:g} s; "
                                  "answered 408 and its connection closed")
            _raw_answer(self.transport, "408 Request Timeout", "request headers not complete in time")

    return BoundedProtocol


def server_config(sink: TrafficSink, port: int, tick_seconds: float = 1.0, **options):
    """The uvicorn configuration the sink serves with (`options`: more of uvicorn.Config's)."""
    import uvicorn

    return uvicorn.Config(make_app(sink, tick_seconds), host=sink.settings.host, port=port, log_level="warning",
                          access_log=False, lifespan="on", http=_protocol(sink),
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES, **options)


HEALTH_CONNECTIONS = 16  # the health port's own bound: probes come a few a minute


def health_config(host: str, port: int):
    """A second server, for Kubernetes' probes alone: GET /healthz on a port of its own, whose connections no
    flood of the events' port can take (beyond --max-connections that port answers 503 as a connection opens)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route(HEALTH_PATH, health, methods=["GET"])])
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                          limit_concurrency=HEALTH_CONNECTIONS, timeout_keep_alive=5)


def serve(sink: TrafficSink, port: int, health_port: int | None = None) -> None:
    """Runs the HTTP server (and the health server, with `health_port`) until SIGTERM or SIGINT, then publishes
    the open batch."""
    import uvicorn

    config = server_config(sink, port, timeout_graceful_shutdown=20)
    # uvicorn shuts down on the signal, then raises it again under the handler it found: under these no-op
    # handlers a stop the sink was asked for ends here, and the command says what it recorded, exit 0.
    handled = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.signal(sig, _ignore) for sig in handled}
    try:
        if health_port is None:
            uvicorn.Server(config).run()
        else:
            asyncio.run(_serve_with_health(uvicorn.Server(config),
                                           uvicorn.Server(health_config(sink.settings.host, health_port))))
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


async def _serve_with_health(events, health) -> None:
    """The health server first, the events' server after it: each takes SIGTERM and SIGINT while it runs, the
    events' over the health one's, which it hands the signal back to as it stops; a stop without one stops the
    health server too. SystemExit where either cannot listen."""
    probes = asyncio.get_running_loop().create_task(health.serve())
    while not health.started and not probes.done():
        await asyncio.sleep(0.02)
    if probes.done():
        probes.result()  # uvicorn's SystemExit: it has logged why
        raise SystemExit(FAILED)  # it stopped before it listened
    try:
        await events.serve()
    finally:
        health.should_exit = True
        await probes


def _ignore(signum, frame) -> None:
    return None
