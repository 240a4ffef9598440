"""Traffic records written as spans: batched, staged a file at a time so that memory stays bounded, published by
contract.storage's protocol under the next free number, and a storage fault counted rather than raised."""

from __future__ import annotations

import collections
import errno
import json
import logging
import math
import posixpath
import threading
import time
from typing import Callable

from contract import storage
from contract.errors import first_line
from contract.traffic import FILE_PREFIX, FILE_SUFFIX, REPORT_FILE, STAGING_KIND
from traffic.records import TrafficRecord, TrafficReport
from traffic.spans import highest_number, link_problem, span_dir
from traffic.tfrecord import tfrecord_bytes

_PUBLISH_TRIES = 100  # writers that each take the next free number: one of them wins each round
# Records held before they are staged as a file, at most, in bytes: a count alone would hold 256 images of up to
# the sink's largest event each (gigabytes) in memory.
FILE_BYTES = 16 * 2**20

logger = logging.getLogger(__name__)


def loss_reason(error: BaseException) -> str:
    """The reason a storage fault is counted under: short, so that counts by reason stay few."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC or "No space left" in str(error):
        return "disk full"
    return f"storage error ({type(error).__name__})"


LOG_EVERY_SECONDS = 10.0  # the sink's lines of lost or refused traffic, per reason


class PacedLog:
    """One log line per reason at most every LOG_EVERY_SECONDS, the next one saying how many were left unsaid
    since: traffic lost or refused again and again (a full disk, a client that keeps sending bad events) would
    otherwise flood the log."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._said: dict[str, float] = {}
        self._unsaid: collections.Counter = collections.Counter()

    def say(self, log: Callable[..., None], reason: str, line: str, unsaid: str) -> None:
        """`log(line)` unless a line of `reason` was logged within the period; `unsaid` names what was not said
        ("more like it")."""
        now = self._clock()
        if now - self._said.get(reason, -math.inf) < LOG_EVERY_SECONDS:
            self._unsaid[reason] += 1
            return
        more = self._unsaid.pop(reason, 0)
        log("%s%s", line, f" (and {more} {unsaid} since the last line)" if more else "")
        self._said[reason] = now


class TrafficWriter:
    """Collects records and publishes them as traffic spans: one span per `batch_size` records, or once the
    oldest record waited `max_seconds` (checked on each add and by flush_if_old). Records go to the staging
    folder `records_per_file` at a time, or as soon as they reach FILE_BYTES, so the memory held is bounded
    whatever the traffic. A storage fault loses the open batch: counted under `lost` by reason, logged in one line, and
    written into the next span's report. Safe to call from several threads."""

    def __init__(self, traffic_root: str, batch_size: int, max_seconds: float, records_per_file: int = 256,
                 clock: Callable[[], float] = time.monotonic):
        if batch_size < 1 or records_per_file < 1 or not max_seconds > 0:
            raise ValueError("batch_size and records_per_file must be at least 1, max_seconds above 0")
        self.traffic_root = str(traffic_root).rstrip("/") or "/"
        self.batch_size, self.max_seconds, self.records_per_file = batch_size, max_seconds, records_per_file
        self._clock = clock
        self._lock = threading.RLock()
        self.recorded = 0  # records in published spans
        self.spans: list[int] = []  # published by this writer
        self.lost: collections.Counter = collections.Counter()  # records lost, by reason (all time)
        self.last_error: str | None = None
        self._paced = PacedLog(clock)
        self._report_counts = self._no_counts()
        self._reset_batch()

    @staticmethod
    def _no_counts() -> dict:
        return {"sampled_out": 0, "refused": collections.Counter(), "lost": collections.Counter()}

    def _reset_batch(self) -> None:
        self._staging: str | None = None
        self._pending: list[bytes] = []  # serialized records not yet in a staged file
        self._pending_bytes = 0
        self._files: dict[str, int] = {}
        self._count = 0
        self._opened: float | None = None
        self._times: list[int] = []  # first and last
        self._versions: set[int] = set()
        self._origins: set[str] = set()

    @property
    def open_records(self) -> int:
        return self._count

    def note_sampled_out(self, requests: int = 1) -> None:
        with self._lock:
            self._report_counts["sampled_out"] += requests

    def note_refused(self, reason: str) -> None:
        with self._lock:
            self._report_counts["refused"][reason] += 1

    def note_lost(self, reason: str, records: int = 1) -> None:
        with self._lock:
            self.lost[reason] += records
            self._report_counts["lost"][reason] += records

    def add(self, record: TrafficRecord) -> int | None:
        """Adds one record; returns the span number when this published one."""
        serialized = record.serialized()
        with self._lock:
            if self._opened is None:
                self._opened = self._clock()
            self._pending.append(serialized)
            self._pending_bytes += len(serialized)
            self._count += 1
            self._times = [min(self._times[0], record.time_ms), max(self._times[1], record.time_ms)] \
                if self._times else [record.time_ms, record.time_ms]
            self._versions.add(record.version)
            self._origins.add(record.origin)
            try:
                if len(self._pending) >= self.records_per_file or self._pending_bytes >= FILE_BYTES:
                    self._stage_pending()
            except storage.FAULTS as error:
                self._lose_batch(error)
                return None
            if self._count >= self.batch_size or self._clock() - self._opened >= self.max_seconds:
                return self.flush()
            return None

    def flush_if_old(self) -> int | None:
        with self._lock:
            if self._opened is not None and self._clock() - self._opened >= self.max_seconds:
                return self.flush()
            return None

    def flush(self, counts_too: bool = False) -> int | None:
        """Publishes the open batch (if it holds a record; with `counts_too`, also one of none when requests
        were sampled out, refused or lost since the last span: a writer about to end says them in a report, not
        in its last log line alone); returns its span number, None if nothing was published (nothing to, or a
        storage fault lost the batch: see `lost` and `last_error`)."""
        with self._lock:
            counts = self._report_counts
            untold = counts["sampled_out"] or any(counts["refused"].values()) or any(counts["lost"].values())
            if not self._count and not (counts_too and untold):
                return None
            try:
                self._stage_pending()
                if self._staging is None:  # a span of no record: its report alone
                    self._open_staging()
                span = self._publish()
            except (*storage.FAULTS, storage.AlreadyExistsError) as error:
                self._lose_batch(error)
                return None
            self.recorded += self._count
            self.spans.append(span)
            self._report_counts = self._no_counts()
            self._reset_batch()
            return span

    def _stage_pending(self) -> None:
        linked = link_problem(self.traffic_root)  # made a link while the writer ran: the batch is lost, said
        if linked:
            raise NotADirectoryError(linked)
        if not self._pending:
            return
        if self._staging is None:
            self._open_staging()
        name = f"{FILE_PREFIX}{len(self._files)}{FILE_SUFFIX}"
        storage.backend.write(posixpath.join(self._staging, name), tfrecord_bytes(self._pending))
        self._files[name] = len(self._pending)
        self._pending, self._pending_bytes = [], 0

    def _open_staging(self) -> None:
        storage.backend.makedirs(self.traffic_root)
        staging = posixpath.join(self.traffic_root, storage.staging_name(STAGING_KIND))
        storage.backend.makedirs(staging)
        self._staging = staging

    def _report(self, span: int) -> TrafficReport:
        counts = self._report_counts
        return TrafficReport(span=span, records=self._count, files=dict(self._files),
                             first_time_ms=self._times[0] if self._times else None,
                             last_time_ms=self._times[1] if self._times else None,
                             model_versions=sorted(self._versions), origins=sorted(self._origins),
                             sampled_out=counts["sampled_out"], refused=dict(counts["refused"]),
                             lost=dict(counts["lost"]))

    def _publish(self) -> int:
        for _ in range(_PUBLISH_TRIES):
            span = highest_number(self.traffic_root) + 1
            commit = json.dumps(self._report(span).to_json(), indent=2).encode()
            final = span_dir(self.traffic_root, span)
            try:
                storage.publish(self._staging, final, REPORT_FILE, commit)
                return span
            except storage.AlreadyExistsError:
                continue  # another writer took this number: the next one
            except storage.FAULTS:
                # Locally the existence check and the rename are two steps: a folder another writer renamed in
                # between makes rename(2) fail with "Directory not empty" instead.
                if storage.backend.exists(self._staging) and storage.backend.exists(final):
                    continue
                raise
        raise storage.AlreadyExistsError(f"{self.traffic_root}: no free span number after {_PUBLISH_TRIES} tries")

    def _lose_batch(self, error: BaseException) -> None:
        reason = loss_reason(error)
        lost = self._count
        self.last_error = f"{lost} traffic record(s) lost: {first_line(error, with_type=True)}"
        self._paced.say(logger.error, reason, f"traffic: {self.last_error}", "more batch(es) lost so")
        staging = self._staging
        self._reset_batch()
        self.note_lost(reason, lost)
        if staging is not None:
            try:
                storage.backend.rmtree(staging)
            except storage.FAULTS:
                pass  # the sink's next start removes it

    def stats(self) -> dict:
        with self._lock:
            return {"recorded": self.recorded, "open_batch": self._count, "spans_published": len(self.spans),
                    "lost": dict(self.lost)}
