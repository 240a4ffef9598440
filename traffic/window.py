"""Windows of committed traffic spans, as monitor reads them: the newest records' figures in memory, their images
read again from the spans a batch at a time."""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
from typing import Iterator

import numpy as np
import tensorflow as tf

from contract import storage
from contract.errors import first_line
from contract.traffic import (
    FILE_PREFIX,
    FILE_SUFFIX,
    IMAGE_KEY,
    ORIGIN_KEY,
    REQUEST_ID_KEY,
    SCORE_KEY,
    SHA256_KEY,
    TIME_KEY,
    VERSION_KEY,
)
from traffic.records import TrafficDataError
from traffic.spans import committed_spans, incomplete_reason, link_problem, load_report, span_dir
from traffic.tfrecord import read_tfrecords

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
    except storage.FAULTS as error:
        raise TrafficDataError(f"{path} cannot be read ({first_line(error)})") from None


def _file_index(name: str) -> tuple[int, str]:
    digits = name.removeprefix(FILE_PREFIX).removesuffix(FILE_SUFFIX)
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
