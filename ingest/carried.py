"""Labeled queues carried into every later span: the images a person sorted stay in training.

A sorted labeling queue (monitoring.queue) ingested as a span is marked as one in its report (`labeled_queue`,
the SHA-256 of its queue record: the queue's identity, whichever folder it was sorted in). Every span ingested
after it holds, beside its source's images, that span's own records, copied record by record into
<split>/queue-span-<K>.tfrecord of the same split they had (an image of a test split stays in test: no image
moves between splits from span to span). A queue ingested again (more of it sorted) supersedes its earlier
span. With a span window of N, a queue that a span the Trainer reads beside the new one holds already (as its
own span or carried: one of the N-1 numbers below the new span's, read by an earlier run) is not carried
again: the Trainer reads each of its images once. The span's fingerprint covers
the carried spans, so a scheduled run on unchanged data reuses the span that carries them. A queue's span
removed from the examples root is carried no more: the next ingest writes a span without it.

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
    """A labeled queue's span to carry: its number and the fingerprint of the queue it holds."""

    span: int
    fingerprint: str


@dataclasses.dataclass
class Carried:
    """What a new span carries: `images` {sha256: (span, source id, label)}, and `entries` for its report."""

    images: dict[str, tuple[int, str, int]] = dataclasses.field(default_factory=dict)
    entries: list[dict] = dataclasses.field(default_factory=list)


def queue_identity(kind: str, location: str) -> str | None:
    """The SHA-256 of a labeling queue's record when the source is a sorted queue, None for any other source."""
    record = sources.queue_record(location) if kind == "folder" else None
    return hashlib.sha256(record).hexdigest() if record is not None else None


def to_carry(reports: Mapping[int, IngestReport | None], position: int, window: int, own_queue: str | None,
             read: Collection[int] = ()) -> list[QueueSpan]:
    """The labeled queues' spans a span numbered `position` carries, oldest first. `reports`: every span of the
    examples root, None for one another tool wrote; `own_queue`: the identity of the queue being ingested (its
    earlier span is superseded, never carried into its own); `read`: the spans runs have read (ExampleGen's
    Examples in ML Metadata): of those, the span window's resolver (TFX's SpanRangeStrategy) gives the Trainer
    the ones numbered within `window` of the newest, and a span no run read is never in it."""
    newest: dict[str, QueueSpan] = {}
    for span in sorted(s for s in reports if s < position):
        report = reports[span]
        if report is not None and report.labeled_queue and report.labeled_queue != own_queue:
            newest[report.labeled_queue] = QueueSpan(span, report.own_fingerprint)
    held: set[int] = set()  # the queue spans the rest of the Trainer's window holds already
    for span in sorted(s for s in reports if position - window < s < position and s in read):
        report = reports[span]
        if report is not None:
            held |= {span} if report.labeled_queue else set()
            held |= {entry["span"] for entry in report.carried}
    return sorted((queue for queue in newest.values() if queue.span not in held), key=lambda q: q.span)


def fingerprint(data_fingerprint: str, carried: list[QueueSpan]) -> str:
    """The span's fingerprint: its source's, and the queues it carries (the source's alone when none)."""
    if not carried:
        return data_fingerprint
    text = json.dumps([data_fingerprint, [[queue.span, queue.fingerprint] for queue in carried]])
    return hashlib.sha256(text.encode()).hexdigest()


def is_carried_file(name: str) -> bool:
    return posixpath.basename(name).startswith(PREFIX)


def carry(examples_root: str, staging: str, queues: list[QueueSpan]) -> Carried:
    """Copies the own records of each queue's span into `staging`, newest queue first (an image two queues hold
    is kept as the newer one labelled it); returns what was carried."""
    carried = Carried()
    for queue in sorted(queues, key=lambda q: -q.span):
        carried.entries.append(_carry_span(examples_root, staging, queue.span, carried))
    carried.entries.sort(key=lambda entry: entry["span"])
    return carried


def _own_files(folder: str) -> list[tuple[str, str]]:
    """(split, path) of the TFRecord files a span wrote from its own source."""
    found = []
    for name in storage.backend.files(folder):
        parts = name.split("/")
        if len(parts) == 2 and parts[0] in layout.SPLITS and not parts[1].startswith(".") \
                and not is_carried_file(name):
            found.append((parts[0], posixpath.join(folder, name)))
    return found


def _carry_span(examples_root: str, staging: str, span: int, carried: Carried) -> dict:
    folder = layout.span_dir(examples_root, span)
    problem = storage.link_problem(folder)
    if problem:
        raise sources.SourceError(f"the labeled queue of span {span} cannot be carried into the new span: "
                                  f"{folder}: {problem}")
    per_split = dict.fromkeys(layout.SPLITS, 0)
    per_label = dict.fromkeys(features.LABEL_NAMES, 0)
    left_out = 0
    writers: dict[str, tf.io.TFRecordWriter] = {}
    try:
        for split, path in _own_files(folder):
            for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
                feature = tf.train.Example.FromString(record).features.feature
                sha256 = feature[features.SHA256_KEY].bytes_list.value[0].decode()
                if sha256 in carried.images:
                    left_out += 1
                    continue
                label = int(feature[features.LABEL_KEY].int64_list.value[0])
                carried.images[sha256] = (span, feature[features.SOURCE_KEY].bytes_list.value[0].decode(), label)
                if split not in writers:
                    tf.io.gfile.makedirs(posixpath.join(staging, split))
                    writers[split] = tf.io.TFRecordWriter(posixpath.join(staging, split, f"{PREFIX}{span}.tfrecord"))
                writers[split].write(record)
                per_split[split] += 1
                per_label[features.LABEL_NAMES[label]] += 1
    finally:
        for writer in writers.values():
            writer.close()
    return {"span": span, "examples": sum(per_split.values()), "examples_per_split": per_split,
            "examples_per_label": per_label, "left_out": left_out}
