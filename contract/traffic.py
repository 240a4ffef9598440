"""Serving traffic as the pipeline keeps it: the images the served model was asked about and what it answered.

Layout under a root's traffic folder (layout.RunLayout.traffic_root):
    span-<N>/traffic-<k>.tfrecord   plain TFRecords of tf.Example, one example per image (keys below)
    span-<N>/traffic_report.json    the span's commit record, written last
A traffic span is published by contract.storage's protocol, like a span of
examples: its files are written to a hidden staging folder as its batch fills,
the folder is renamed into place, and its report is written last. A span
without its report, or whose report names a file that is not there, or that is
or holds a symbolic link, is incomplete: no reader counts it. Writers take the
number above the highest folder (a span cut short keeps its number: a reader
may have listed it) and try the next one when another writer took it first.

KServe's inference logger (through the traffic sink) and `predict --record`
write here; `monitor` reads windows of it.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import errno
import hashlib
import json
import logging
import os
import posixpath
import struct
import threading
import time
import zlib
from typing import Callable, Iterator

import google_crc32c
import numpy as np
import tensorflow as tf

from contract import layout, storage
from contract.errors import CommandError, first_line

# The tf.Example keys of a traffic record.
IMAGE_KEY = "image"  # bytes: the encoded image as the client sent it
SHA256_KEY = "image_sha256"  # bytes: hex SHA-256 of the image
SCORE_KEY = "dog_probability"  # float: the served model's answer; NaN where it said the image was invalid
VERSION_KEY = "model_version"  # int64: the served version that answered; UNKNOWN_VERSION when not known
TIME_KEY = "time_ms"  # int64: Unix time of the request, in milliseconds
REQUEST_ID_KEY = "request_id"  # bytes: the request's id (KServe's CloudEvent id; one request may hold many images)
ORIGIN_KEY = "origin"  # bytes: one of ORIGINS
KEYS = (IMAGE_KEY, SHA256_KEY, SCORE_KEY, VERSION_KEY, TIME_KEY, REQUEST_ID_KEY, ORIGIN_KEY)

KSERVE_ORIGIN = "kserve"  # KServe's inference logger, through the traffic sink
PREDICT_ORIGIN = "predict"  # `predict --record`
ORIGINS = (KSERVE_ORIGIN, PREDICT_ORIGIN)
UNKNOWN_VERSION = -1
# The earliest time a record may carry. An older stamp is a sender's clock fault (year 1, a zero), not a request:
# the sink refuses it, and a window's times are shown only within a calendar's range.
EARLIEST_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z

REPORT_FILE = "traffic_report.json"
STAGING_KIND = "traffic"  # staged in traffic/.traffic-<hex>/
STAGING_PREFIX = f".{STAGING_KIND}-"
_FILE = "traffic-{index}.tfrecord"
_PUBLISH_TRIES = 100  # writers that each take the next free number: one of them wins each round
# Records held before they are staged as a file, at most, in bytes: a count alone would hold 256 images of up to
# the sink's largest event each (gigabytes) in memory.
FILE_BYTES = 16 * 2**20

logger = logging.getLogger(__name__)


def time_text(time_ms: int) -> str:
    """A record's time in UTC, ISO 8601 to the second; one no calendar date can show (written by another tool, or
    before EARLIEST_TIME_MS was kept) as its milliseconds."""
    try:
        return datetime.datetime.fromtimestamp(int(time_ms) / 1000, datetime.timezone.utc).isoformat(
            timespec="seconds")
    except (ValueError, OverflowError, OSError):
        return f"{int(time_ms)} ms from the Unix epoch (no calendar date)"


class TrafficDataError(CommandError):
    """A committed traffic span cannot be read as written; the message names the file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class TrafficRecord:
    """One image of one request, with the served model's answer."""

    image: bytes
    score: float  # NaN: the server said the image was invalid
    version: int  # UNKNOWN_VERSION when the server's answer did not say and no served version was known
    time_ms: int
    request_id: str
    origin: str

    def __post_init__(self):
        if self.origin not in ORIGINS:
            raise ValueError(f"origin {self.origin!r} is not one of {ORIGINS}")

    def serialized(self) -> bytes:
        example = tf.train.Example()
        feature = example.features.feature
        feature[IMAGE_KEY].bytes_list.value.append(self.image)
        feature[SHA256_KEY].bytes_list.value.append(hashlib.sha256(self.image).hexdigest().encode())
        feature[SCORE_KEY].float_list.value.append(self.score)
        feature[VERSION_KEY].int64_list.value.append(self.version)
        feature[TIME_KEY].int64_list.value.append(self.time_ms)
        feature[REQUEST_ID_KEY].bytes_list.value.append(self.request_id.encode("utf-8", "backslashreplace"))
        feature[ORIGIN_KEY].bytes_list.value.append(self.origin.encode())
        return example.SerializeToString()


@dataclasses.dataclass
class TrafficReport:
    """A traffic span's commit record: what it holds, and what its batch did not keep."""

    span: int
    records: int
    files: dict[str, int]  # file name -> records in it; a span is complete when all are there
    first_time_ms: int | None
    last_time_ms: int | None
    model_versions: list[int]
    origins: list[str]
    # Since the span before, by this writer: requests left out by the sampling rate, and events refused or
    # records lost (a storage fault, a request whose response never came), each by reason.
    sampled_out: int = 0
    refused: dict[str, int] = dataclasses.field(default_factory=dict)
    lost: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict, path: str) -> "TrafficReport":
        try:
            report = cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})
        except TypeError as error:
            raise TrafficDataError(f"{path} is damaged ({error})") from None
        problem = report.shape_problem()
        if problem:
            raise TrafficDataError(f"{path} is damaged ({problem})")
        return report

    def shape_problem(self) -> str | None:
        """What makes the fields unusable (readers count, compare and list them), None if nothing."""
        def number(value, none_too=False):
            return (value is None and none_too) or (isinstance(value, int) and not isinstance(value, bool))

        if not isinstance(self.files, dict) or not all(isinstance(name, str) and number(count)
                                                       for name, count in self.files.items()):
            return "its files are not a JSON object of record counts"
        if not all(number(getattr(self, name), none_too=name.endswith("time_ms"))
                   for name in ("span", "records", "first_time_ms", "last_time_ms")):
            return "its span, records or times are not whole numbers"
        if not isinstance(self.model_versions, list) or not all(map(number, self.model_versions)):
            return "its model_versions are not a list of whole numbers"
        return None


# TFRecord framing (tensorflow/core/lib/io/record_writer.cc): length, masked CRC-32C of the length, data,
# masked CRC-32C of the data.
def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord_bytes(records: list[bytes]) -> bytes:
    parts = []
    for data in records:
        length = struct.pack("<Q", len(data))
        parts += [length, _masked_crc(length), data, _masked_crc(data)]
    return b"".join(parts)


def read_tfrecords(stream, where: str) -> Iterator[bytes]:
    """The records of a TFRecord file read from a binary file object, one at a time; TrafficDataError names
    `where` and the record that is damaged."""
    index = 0

    def read(count: int) -> bytes:
        try:
            return stream.read(count)
        except (EOFError, OSError, zlib.error, tf.errors.OpError) as error:  # a damaged .gz: EOFError, BadGzipFile
            why = first_line(error) or type(error).__name__
            raise TrafficDataError(f"{where}: record {index} cannot be read ({why})") from None

    while header := read(12):
        if len(header) < 12 or _masked_crc(header[:8]) != header[8:]:
            raise TrafficDataError(f"{where}: record {index} is damaged (its length does not check)")
        (length,) = struct.unpack("<Q", header[:8])
        body = [read(length)]  # handed over, not kept: this frame holds no record while the reader works
        footer = read(4)
        if len(body[0]) < length or _masked_crc(body[0]) != footer:
            raise TrafficDataError(f"{where}: record {index} is damaged (cut short or its checksum does not match)")
        yield body.pop()
        index += 1


# --- reading -----------------------------------------------------------------------------------------------------

def _numbered(traffic_root: str) -> list[int]:
    if not storage.backend.isdir(traffic_root):
        return []
    return sorted(n for name in storage.backend.listdir(traffic_root) if (n := layout.span_number(name)) is not None)


def link_problem(traffic_root: str) -> str | None:
    """Why a local traffic folder cannot be used (it is a symbolic link: writing, removing or reading through it
    would touch the folder it points at), None if it can."""
    root = str(traffic_root)
    if storage.is_local(root) and os.path.islink(root):
        return f"{root} is a symbolic link (to {os.readlink(root)}), and links are never followed"
    return None


def span_dir(traffic_root: str, span: int) -> str:
    return layout.span_dir(traffic_root, span)


def incomplete_reason(traffic_root: str, span: int) -> str | None:
    """Why span-<span> is not a committed traffic span (None: it is)."""
    folder = span_dir(str(traffic_root), span)
    linked = storage.link_problem(folder)
    if linked:
        return linked
    if not storage.backend.exists(posixpath.join(folder, REPORT_FILE)):
        return f"no {REPORT_FILE} (cut short while it was written)"
    report = load_report(traffic_root, span)
    missing = sorted(set(report.files) - set(storage.backend.files(folder)))
    if missing:
        return f"{len(missing)} of the files its report names are missing ({', '.join(missing[:3])})"
    return None


def committed_spans(traffic_root: str) -> list[int]:
    """The traffic spans a reader may read, oldest first."""
    root = str(traffic_root)
    linked = link_problem(root)
    if linked:
        raise TrafficDataError(f"traffic cannot be read: {linked}")
    return [span for span in _numbered(root) if incomplete_reason(root, span) is None]


def incomplete_spans(traffic_root: str) -> dict[int, str]:
    """{span: why} of the numbered folders that are no committed span: a writer killed while it published one
    (its images are lost), or a folder of another hand."""
    root = str(traffic_root)
    found = {}
    for span in _numbered(root):
        try:
            reason = incomplete_reason(root, span)
        except TrafficDataError as error:
            reason = str(error)
        if reason:
            found[span] = reason
    return found


# A span left incomplete longer than this is no publication in progress (a writer renames its span into place,
# then writes its report at once): the sink's start moves it aside.
PUBLISH_GRACE_SECONDS = 600


def aside_dir(traffic_root: str) -> str:
    """Where incomplete spans go: beside the traffic folder, where no reader looks."""
    return str(traffic_root).rstrip("/") + storage.ASIDE_SUFFIX


def _aside_number(name: str) -> int | None:
    return layout.span_number("-".join(name.split("-")[:2]))


def _highest_number(traffic_root: str) -> int:
    """The highest span number ever used: those moved aside count (a reader may have seen them)."""
    return max(_numbered(traffic_root) + storage.aside_numbers(aside_dir(traffic_root), _aside_number), default=0)


def _newest_change(folder: str) -> float:
    """The time of the newest change to `folder` or a file in it, as Unix seconds."""
    paths = [folder] + [posixpath.join(folder, name) for name in storage.backend.files(folder)]
    return max(tf.io.gfile.stat(path).mtime_nsec / 1e9 for path in paths)


def move_incomplete_aside(traffic_root: str, now: float | None = None) -> list[str]:
    """Moves the incomplete spans untouched for PUBLISH_GRACE_SECONDS aside (their numbers are not used again)
    and names the younger ones; a line for each. Only for the root's one traffic sink, at its start."""
    root, now = str(traffic_root), time.time() if now is None else now
    lines = []
    for span, reason in incomplete_spans(root).items():
        folder = span_dir(root, span)
        if now - _newest_change(folder) < PUBLISH_GRACE_SECONDS:
            lines.append(f"{folder} is no committed span yet ({reason}): left as it is, in case a writer is "
                         "publishing it")
            continue
        moved = storage.move_aside(folder, aside_dir(root), layout.span_name(span), REPORT_FILE)
        lines.append(f"{folder} is no committed span ({reason}): a writer stopped while it published it, or "
                     f"another hand made it; moved to {moved}, its number is not used again")
    return lines


def load_report(traffic_root: str, span: int) -> TrafficReport:
    path = posixpath.join(span_dir(str(traffic_root), span), REPORT_FILE)
    try:
        return TrafficReport.from_json(storage.read_json(path), path)
    except storage.UnreadableFileError as error:
        raise TrafficDataError(str(error)) from None


# Images a window's batches hold at most, by count and by bytes: monitor's memory stays that of one batch (and one
# span file, FILE_BYTES and a record) whatever the window.
WINDOW_BATCH = 64
WINDOW_BATCH_BYTES = 32 * 2**20


@dataclasses.dataclass
class TrafficWindow:
    """Records of committed traffic spans, oldest first: the small figures of each (score, version, time, ids)
    in memory; its images are read again from the spans, a batch at a time (batches())."""

    traffic_root: str
    scores: np.ndarray  # float32; NaN where the server said invalid
    versions: np.ndarray  # int64
    times_ms: np.ndarray  # int64
    request_ids: list[str]
    origins: list[str]
    sha256s: list[str]
    spans: list[int]  # the spans the records came from, oldest first
    places: list[tuple[int, int]]  # (span, number in the span) of each record

    def __len__(self) -> int:
        return len(self.times_ms)

    def batches(self, size: int = WINDOW_BATCH, max_bytes: int = WINDOW_BATCH_BYTES
                ) -> Iterator[tuple[list[int], list[bytes]]]:
        """(positions in the window, images) of each record once, read span by span in the order written, at
        most `size` images or (beyond the first) `max_bytes` a batch. A record out of time order across spans
        comes in its span's turn: its position says where it belongs."""
        position = {place: index for index, place in enumerate(self.places)}
        numbers, images, held = [], [], 0
        for span in sorted({span for span, _ in self.places}):
            self._check_committed(span)
            wanted = sum(1 for place_span, _ in self.places if place_span == span)
            for row in read_span(self.traffic_root, span):
                index = position.get((span, row[2]))
                if index is None:
                    continue
                # The span may have been removed and published again under its number since read_window: an
                # image other than the one measured would be queued under the old record's score.
                if hashlib.sha256(row[3]).hexdigest() != self.sha256s[index]:
                    raise self._changed(span, f"record {row[2]} is not the image it was")
                wanted -= 1
                if images and (len(images) >= size or held + len(row[3]) > max_bytes):
                    yield numbers, images
                    numbers, images, held = [], [], 0
                numbers.append(index)
                images.append(row[3])
                held += len(row[3])
            if wanted:
                raise self._changed(span, f"{wanted} of its records are gone")
        if images:
            yield numbers, images

    def _check_committed(self, span: int) -> None:
        """The check read_window made, made again before a span is read again: still committed, no link."""
        root = str(self.traffic_root)
        try:
            problem = link_problem(root) or incomplete_reason(root, span)
        except TrafficDataError as error:
            problem = str(error)
        if problem:
            raise self._changed(span, problem)

    def _changed(self, span: int, what: str) -> TrafficDataError:
        return TrafficDataError(f"{span_dir(str(self.traffic_root), span)} changed while monitor read it ({what});"
                                " run monitor again")

    @property
    def images(self) -> list[bytes]:
        """Every image of the window at once, in window order: for a small window (a test, a tool); monitor
        reads batches()."""
        found: list[bytes] = [b""] * len(self)
        for numbers, images in self.batches():
            for index, image in zip(numbers, images):
                found[index] = image
        return found


def _feature(example, key: str, kind: str, where: str):
    values = getattr(example.features.feature[key], kind).value
    if len(values) != 1:
        raise TrafficDataError(f"{where}: feature {key!r} has {len(values)} values where one belongs")
    return values[0]


def read_span(traffic_root: str, span: int) -> Iterator[tuple]:
    """(time_ms, span, index, image, score, version, request_id, origin, sha256) of each record of a committed
    span, in the order written, one file of the span read at a time."""
    folder = span_dir(str(traffic_root), span)
    index = 0
    for name in sorted(load_report(traffic_root, span).files, key=_file_index):
        path = posixpath.join(folder, name)
        # A record at a time from the file, each dropped once parsed: a large image is held about twice (its
        # parsed Example and its bytes), not also as the whole file and the record.
        for serialized in _file_records(path):
            where = f"{path}: record {index}"
            try:
                example = tf.train.Example.FromString(serialized)
            except Exception:  # protobuf's DecodeError: its module differs between implementations
                raise TrafficDataError(f"{where} is not a tf.Example") from None
            del serialized
            row = (_feature(example, TIME_KEY, "int64_list", where), span, index,
                   _feature(example, IMAGE_KEY, "bytes_list", where),
                   _feature(example, SCORE_KEY, "float_list", where),
                   _feature(example, VERSION_KEY, "int64_list", where),
                   _feature(example, REQUEST_ID_KEY, "bytes_list", where).decode("utf-8", "replace"),
                   _feature(example, ORIGIN_KEY, "bytes_list", where).decode("utf-8", "replace"),
                   _feature(example, SHA256_KEY, "bytes_list", where).decode("ascii", "replace"))
            del example
            yield row
            del row
            index += 1


def _file_records(path: str) -> Iterator[bytes]:
    try:
        with storage.backend.open(path) as stream:
            yield from read_tfrecords(stream, path)
    except (OSError, tf.errors.OpError) as error:
        raise TrafficDataError(f"{path} cannot be read ({first_line(error)})") from None


def _file_index(name: str) -> tuple[int, str]:
    digits = name.removeprefix("traffic-").removesuffix(".tfrecord")
    return (int(digits) if digits.isascii() and digits.isdigit() else -1, name)


def read_window(traffic_root: str, max_images: int | None = None, since_ms: int | None = None) -> TrafficWindow:
    """The newest `max_images` records (all when None) of the committed spans, at or after `since_ms` when
    given, oldest first (by request time, then span and order written). Reads spans by their newest record's
    time, newest first, and stops at the first whose newest record is older than every record kept: by time, not
    by number, since a sender's clock or a second writer can give a later span older records. Keeps no image
    (TrafficWindow.batches reads them again)."""
    root = str(traffic_root)
    kept: list[tuple] = []
    reports = [load_report(root, span) for span in committed_spans(root)]
    for report in sorted((r for r in reports if r.last_time_ms is not None),
                         key=lambda r: (r.last_time_ms, r.span), reverse=True):
        span = report.span
        if since_ms is not None and report.last_time_ms < since_ms:
            continue
        if max_images is not None and len(kept) >= max_images and (not kept or report.last_time_ms <= kept[0][0]):
            break
        rows = [row[:3] + row[4:] for row in read_span(root, span) if since_ms is None or row[0] >= since_ms]
        kept = sorted(kept + rows, key=lambda row: row[:3])
        if max_images is not None:
            kept = kept[-max_images:] if max_images > 0 else []
    # Each row: (time_ms, span, index, score, version, request_id, origin, sha256).
    return TrafficWindow(
        traffic_root=root, scores=np.array([row[3] for row in kept], dtype=np.float32),
        versions=np.array([row[4] for row in kept], dtype=np.int64),
        times_ms=np.array([row[0] for row in kept], dtype=np.int64), request_ids=[row[5] for row in kept],
        origins=[row[6] for row in kept], sha256s=[row[7] for row in kept], spans=sorted({row[1] for row in kept}),
        places=[(row[1], row[2]) for row in kept])


# --- writing -----------------------------------------------------------------------------------------------------

def remove_staging(traffic_root: str) -> list[str]:
    """Removes the staging folders a killed writer left; returns their names. Only for a writer that is the
    root's one traffic writer (the sink at its start): another writer's open batch would go with them."""
    if link_problem(traffic_root):
        return []  # not the root's folder: nothing in it is the writer's to remove
    return storage.remove_staging(str(traffic_root), [STAGING_PREFIX])


def loss_reason(error: BaseException) -> str:
    """The reason a storage fault is counted under: short, so that counts by reason stay few."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC or "No space left" in str(error):
        return "disk full"
    return f"storage error ({type(error).__name__})"


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
            except (OSError, tf.errors.OpError) as error:
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
            except (OSError, tf.errors.OpError, storage.AlreadyExistsError) as error:
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
        name = _FILE.format(index=len(self._files))
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
            span = _highest_number(self.traffic_root) + 1
            commit = json.dumps(self._report(span).to_json(), indent=2).encode()
            final = span_dir(self.traffic_root, span)
            try:
                storage.publish(self._staging, final, REPORT_FILE, commit)
                return span
            except storage.AlreadyExistsError:
                continue  # another writer took this number: the next one
            except (OSError, tf.errors.OpError):
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
        logger.error("traffic: %s", self.last_error)
        staging = self._staging
        self._reset_batch()
        self.note_lost(reason, lost)
        if staging is not None:
            try:
                storage.backend.rmtree(staging)
            except (OSError, tf.errors.OpError):
                pass  # the sink's next start removes it

    def stats(self) -> dict:
        with self._lock:
            return {"recorded": self.recorded, "open_batch": self._count, "spans_published": len(self.spans),
                    "lost": dict(self.lost)}
