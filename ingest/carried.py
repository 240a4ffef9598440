"""Labeled queues carried into every later span: the images a person sorted stay in training.

A sorted labeling queue (monitoring.queue) ingested as a span is marked as one in its report (`labeled_queue`,
the SHA-256 of its queue record: the queue's identity, whichever folder it was sorted in). Every span ingested
after it holds, beside its source's images, that span's own records, copied record by record into
<split>/queue-span-<K>.tfrecord of the same split they had (an image of a test split stays in test: no image
moves between splits from span to span). An image the new span's source holds too is kept as the source has
it, in the source's split (a queue's split comes from the content hash, the source's may come from its
folders; a queue's own span takes it from the newest data span), with the label a person gave it: the
queue's, or, when the source is itself a newer queue, that queue's. A queue ingested again (more of it sorted)
supersedes its earlier span; when a queue's newest span is gone (removed, or moved aside), the queue is
carried no more, its earlier spans neither (the new span's report says so and keeps saying it). Queues are
carried at a span window of 1 only (check_window): with a wider window the Trainer would read a queue's
images in its own span and again carried in a later one. The span's fingerprint covers the carried queues'
content, so a scheduled run on unchanged data reuses the span that carries them.

Records are read from the span's own files as contract.storage lists them (never through a symbolic link) and
written into the new span's staging folder, so a killed ingest leaves no partial span.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
from typing import Collection, Mapping

import tensorflow as tf

from contract import features, layout, storage
from ingest import sources
from ingest.span_report import IngestReport

PREFIX = "queue-span-"  # <split>/queue-span-<K>.tfrecord: records carried from span K; sorts after Beam's images-*


@dataclasses.dataclass(frozen=True)
class QueueSpan:
    """A labeled queue's span to carry: its number, the queue's identity and the fingerprint of its content."""

    span: int
    queue: str
    fingerprint: str


@dataclasses.dataclass
class Carried:
    """What a new span carries: `images` {sha256: (span, source id, label)}, `records` [(sha256, split,
    serialized)], and `entries` for its report."""

    images: dict[str, tuple[int, str, int]] = dataclasses.field(default_factory=dict)
    records: list[tuple[str, str, bytes]] = dataclasses.field(default_factory=list)
    entries: list[dict] = dataclasses.field(default_factory=list)


def queue_identity(kind: str, location: str) -> str | None:
    """The SHA-256 of a labeling queue's record when the source is a sorted queue, None for any other source."""
    record = sources.queue_record(location) if kind == "folder" else None
    return hashlib.sha256(record).hexdigest() if record is not None else None


class WindowRefused(sources.SourceError):
    """A span window above 1 on a root with labeled queues."""


def check_window(reports: Mapping[int, IngestReport | None], window: int, own_queue: str | None) -> None:
    """Refuses a span window above 1 where labeled queues are involved: the Trainer would read a queue's images
    both in the queue's own span and carried in a later one (once in each split, under both labels)."""
    if window <= 1:
        return
    holding = [span for span, report in sorted(reports.items())
               if report is not None and (report.labeled_queue or report.carried)]
    if own_queue or holding:
        where = "the source is one" if own_queue else f"span {holding[0]} holds one"
        raise WindowRefused(f"labeled queues are carried at --span-window 1 only; {where}: ingest and run with "
                            f"--span-window 1 (a window above 1 would train on a queued image twice)")


def to_carry(reports: Mapping[int, IngestReport | None], position: int, own_queue: str | None,
             recorded: Mapping[int, str | None] = {}) -> tuple[list[QueueSpan], list[dict]]:
    """The labeled queues' spans a span numbered `position` carries, oldest first, and the queues it does not
    carry because their newest span is gone (removed or moved aside: a later span's report names it): an older
    span of the same queue, which that one superseded, is never brought back. `reports`: every span of the
    examples root, None for one another tool wrote; `own_queue`: the identity of the queue being ingested (its
    earlier span is superseded, never carried into its own); `recorded`: the numbers file's {span: queue}, which
    names a queue's newest span when it was removed before any later span's report could name it."""
    newest: dict[str, QueueSpan] = {}
    # the newest span any report, or the numbers file, names for each queue
    named: dict[str, int] = {}
    for span, queue in recorded.items():
        if queue is not None and span < position:
            named[queue] = max(named.get(queue, 0), span)
    names: dict[str, str] = {}
    for span in sorted(s for s in reports if s < position):
        report = reports[span]
        if report is None:
            continue
        for entry in [*report.carried, *report.not_carried]:
            if isinstance(entry.get("queue"), str):
                named[entry["queue"]] = max(named.get(entry["queue"], 0), entry["span"])
        if report.labeled_queue:
            named[report.labeled_queue] = max(named.get(report.labeled_queue, 0), span)
            names[report.labeled_queue] = posixpath.basename(report.source.rstrip("/"))
            if report.labeled_queue != own_queue:
                newest[report.labeled_queue] = QueueSpan(span, report.labeled_queue, report.own_fingerprint)
    dropped = [{"queue": queue.queue, "span": named[queue.queue], "earlier": queue.span, "name": names[queue.queue]}
               for queue in newest.values() if named[queue.queue] > queue.span]
    gone = {entry["queue"] for entry in dropped}
    return sorted((q for q in newest.values() if q.queue not in gone), key=lambda q: q.span), dropped


def fingerprint(data_fingerprint: str, carried: list[QueueSpan]) -> str:
    """The span's fingerprint: its source's, and the content of the queues it carries (the source's alone when
    none); not their span numbers: an unchanged queue ingested again changes nothing the Trainer reads."""
    if not carried:
        return data_fingerprint
    text = json.dumps([data_fingerprint, sorted([queue.queue, queue.fingerprint] for queue in carried)])
    return hashlib.sha256(text.encode()).hexdigest()


def holds(report: IngestReport, queue: str | None, data_fingerprint: str) -> bool:
    """Whether a span carries the queue `queue` with this content (ingesting it again would change nothing)."""
    return queue is not None and any(entry.get("queue") == queue and entry.get("fingerprint") == data_fingerprint
                                     for entry in report.carried)


def data_splits(examples_root: str, reports: Mapping[int, IngestReport | None]) -> dict[str, str]:
    """{sha256: split} of the newest span that is not a labeled queue's (the data's, with what it carries): a
    queue's ingest keeps an image the data holds in the data's split, so it never moves between splits."""
    data = [span for span, report in reports.items() if report is not None and not report.labeled_queue]
    if not data:
        return {}
    folder = layout.span_dir(examples_root, max(data))
    problem = storage.link_problem(folder)
    if problem:
        raise sources.SourceError(f"span {max(data)} cannot be read for the splits of its images: {folder}: {problem}")
    splits = {}
    for name in storage.backend.files(folder):
        parts = name.split("/")
        if len(parts) == 2 and parts[0] in layout.SPLITS and parts[1].endswith(".tfrecord"):
            for record in tf.data.TFRecordDataset(posixpath.join(folder, name)).as_numpy_iterator():
                feature = tf.train.Example.FromString(record).features.feature
                splits[feature[features.SHA256_KEY].bytes_list.value[0].decode()] = parts[0]
    return splits


def is_carried_file(name: str) -> bool:
    return posixpath.basename(name).startswith(PREFIX)


def gather(examples_root: str, queues: list[QueueSpan]) -> Carried:
    """Reads the own records of each queue's span, newest queue first (an image two queues hold is kept as the
    newer one labelled it); nothing is written yet (write: the source may hold some of them)."""
    carried = Carried()
    for queue in sorted(queues, key=lambda q: -q.span):
        carried.entries.append(_read_span(examples_root, queue.span, carried)
                               | {"queue": queue.queue, "fingerprint": queue.fingerprint})
    carried.entries.sort(key=lambda entry: entry["span"])
    return carried


def write(staging: str, carried: Carried, in_source: Collection[str]) -> None:
    """Writes the carried records into `staging`, but those of the images in `in_source` (the source's copy was
    kept instead: in the source's split), and counts each entry's examples."""
    entries = {entry["span"]: entry for entry in carried.entries}
    writers: dict[tuple[str, int], tf.io.TFRecordWriter] = {}
    try:
        for sha256, split, record in carried.records:
            span, _, label = carried.images[sha256]
            entry = entries[span]
            if sha256 in in_source:
                entry["in_source"] += 1
                continue
            if (split, span) not in writers:
                tf.io.gfile.makedirs(posixpath.join(staging, split))
                writers[split, span] = tf.io.TFRecordWriter(posixpath.join(staging, split, f"{PREFIX}{span}.tfrecord"))
            writers[split, span].write(record)
            entry["examples"] += 1
            entry["examples_per_split"][split] += 1
            entry["examples_per_label"][features.LABEL_NAMES[label]] += 1
    finally:
        for writer in writers.values():
            writer.close()


def own_files(folder: str) -> list[tuple[str, str]]:
    """(split, path) of the TFRecord files a span wrote from its own source."""
    found = []
    for name in storage.backend.files(folder):
        parts = name.split("/")
        if len(parts) == 2 and parts[0] in layout.SPLITS and not parts[1].startswith(".") \
                and not is_carried_file(name):
            found.append((parts[0], posixpath.join(folder, name)))
    return found


def _read_span(examples_root: str, span: int, carried: Carried) -> dict:
    folder = layout.span_dir(examples_root, span)
    problem = storage.link_problem(folder)
    if problem:
        raise sources.SourceError(f"the labeled queue of span {span} cannot be carried into the new span: "
                                  f"{folder}: {problem}")
    left_out = 0
    for split, path in own_files(folder):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            feature = tf.train.Example.FromString(record).features.feature
            sha256 = feature[features.SHA256_KEY].bytes_list.value[0].decode()
            if sha256 in carried.images:
                left_out += 1
                continue
            label = int(feature[features.LABEL_KEY].int64_list.value[0])
            carried.images[sha256] = (span, feature[features.SOURCE_KEY].bytes_list.value[0].decode(), label)
            carried.records.append((sha256, split, record))
    return {"span": span, "examples": 0, "examples_per_split": dict.fromkeys(layout.SPLITS, 0),
            "examples_per_label": dict.fromkeys(features.LABEL_NAMES, 0), "left_out": left_out, "in_source": 0}
