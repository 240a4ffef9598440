"""The sink's state: requests and responses waiting for their other half in a table bounded by count, bytes and
age, each pair recorded through a TrafficWriter, and the counts of what was refused, sampled out or lost.

A request is recorded whole or not at all: the sampling rate keeps a request by a hash of its id. Each image
gets the response's score, the version served (the response's model_version where the protocol has one, else
the version the root's serving config names) and the request's time. KServe's workers send concurrently and
never retry, so a response may come before its request, and an event the sink refuses is gone.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import time
from typing import Callable, Mapping

from contract import served, storage
from contract.errors import first_line, printable
from contract.traffic import KSERVE_ORIGIN, UNKNOWN_VERSION
from traffic.events import REQUEST_TYPE, Event, parse_event, request_images, response_scores
from traffic.reasons import DUPLICATE, EMPTY_IMAGE, MISMATCH, NO_REQUEST, NO_RESPONSE, PENDING_FULL, SHUTDOWN, Refused
from traffic.records import TrafficRecord
from traffic.settings import SinkSettings
from traffic.writer import PacedLog, TrafficWriter

# Requests (or responses) waiting for the other half, at most: their ids and scores alone stay within tens of MB.
MAX_WAITING = 100_000
# What Python holds per waiting image or score beside the image's bytes (its object and its slot in a list): a
# request of a million two-byte images holds some 50 MB, not 2 MB.
ITEM_BYTES = 64

logger = logging.getLogger(__name__)


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
            except (served.ConfigError, storage.UnreadableFileError, *storage.FAULTS) as error:
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
        self.writer = TrafficWriter(traffic_root, settings.batch_size, settings.batch_seconds,
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
        self._paced = PacedLog(clock)

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
        version = UNKNOWN_VERSION if version is None else version
        kept = [(image, score) for image, score in zip(waiting.images, waiting.scores) if image]
        for image, score in kept:
            self.writer.add(TrafficRecord(image=image, score=score, version=version, time_ms=waiting.time_ms,
                                          request_id=request_id, origin=KSERVE_ORIGIN))
        answer = {"id": request_id, "recorded": len(kept)}
        if len(kept) < len(waiting.images):  # nothing to check drift on: counted per image, the others kept
            answer["skipped"] = {EMPTY_IMAGE: len(waiting.images) - len(kept)}
            self._lose(EMPTY_IMAGE, len(waiting.images) - len(kept))
        return answer

    def _lose(self, reason: str, records: int) -> None:
        self.writer.note_lost(reason, records)
        self._say(reason, f"traffic sink: lost {records} image(s): {reason}")

    def _say(self, reason: str, line: str) -> None:
        self._paced.say(logger.warning, reason, line, "more like it")

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
