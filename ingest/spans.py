"""Turns a data source into a span of tf.Example TFRecords for ImportExampleGen.

Layout under the examples root (contract.layout):
    span-<N>/train/images-*.tfrecord       accepted images of the train split
    span-<N>/eval/images-*.tfrecord        ... of the eval split (the Trainer's choice of epoch)
    span-<N>/test/images-*.tfrecord        ... of the test split (the Evaluator's judgement)
    span-<N>/<split>/queue-span-<K>.tfrecord  images of span K's labeled queue, carried (ingest.carried)
    span-<N>/ingest_report.json            what happened to every file or record
The work runs on Beam with the arguments the caller gives for the number of
items (config.beam_policy decides them for a run). The report is
ingest.span_report's; spans other tools wrote are ingest.foreign_spans' job. A span
is written to a hidden folder, renamed into place and committed by its report
last (contract.storage), so no reader counts half a span, on any storage.
Ingesting data whose content equals the latest span's source, with the same
labeled queues to carry, writes nothing: the pipeline then finds the same span
and reruns from cache. The split comes
from the source when it gives one (e.g. train/ and validation/ folders; a
source with one held-out split has it divided between eval and test), else
from the image's content hash, so one image lands in the same split in every
span and never in two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
import posixpath
import time
from typing import Callable, Iterable, NamedTuple, Sequence

import apache_beam as beam
import tensorflow as tf

from config import DataConfig, beam_policy
from config.beam_policy import IN_PROCESS
from contract import features, layout, progress, storage
from contract.errors import CommandError
from ingest import carried as carrying
from ingest import sources
from ingest.images import CheckedImage, RejectedImage, check_images
from ingest.span_report import (
    ACCEPTED,
    DUPLICATE,
    NORMALIZED,
    OUTCOMES,
    QUARANTINED,
    REPORT_FILE,
    STAGING_KIND,
    IngestReport,
    existing_spans,
    highest_span_number,
    load_report,
    numbers_used,
    record_number,
)

# Ingest writes plain TFRecords: JPEG bytes do not compress (see the README's Performance section).
SPLITS = layout.SPLITS
beam_policy.fast_tfrecord_checksums()
_PROGRESS_EVERY = 1000
# Items a Check element holds: enough that one decoding call per batch costs little beside its images (64
# decoded at 0.16 ms an image on 2 cores, 256 at 0.18), few enough that a batch of photos is a few MB and a source
# of a few hundred items still makes several elements for Beam to spread over workers.
_BATCH = 64
_KEPT = "kept"

@dataclasses.dataclass(frozen=True)
class IngestSettings:
    """What shapes a span (its fingerprint covers these); the defaults are config.DataConfig's."""

    max_pixels: int = DataConfig.max_image_pixels
    train_buckets: int = DataConfig.train_buckets
    eval_buckets: int = DataConfig.eval_buckets
    test_buckets: int = DataConfig.test_buckets
    # Folder sources' files above it are quarantined unread. Left out of the settings the fingerprint hashes:
    # it shapes a span through the files above it, which the fingerprint marks one by one.
    max_file_bytes: int = DataConfig.max_file_mb << 20
    # The spans the Trainer reads (DataConfig.span_window): labeled queues are carried at 1 only (ingest.carried).
    # Left out of the settings hashed: it changes no span it lets through.
    span_window: int = DataConfig.span_window


class NoUsableImagesError(CommandError, ValueError):
    """Every file was quarantined; the report says why."""


def _fingerprint(kind: str, location: str, settings: IngestSettings) -> str:
    """Content hash of the source's files and the settings that shape the span."""
    shaping = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("max_file_bytes", "span_window")}
    digest = hashlib.sha256(json.dumps([kind, shaping]).encode())
    if sources.is_uri(location):
        single = not tf.io.gfile.isdir(location)
        files = [("", location)] if single else sources.remote_files(location)
    elif os.path.isfile(location):
        files = [("", location)]
    else:
        files, problems = sources.local_files(location)
        for relative, problem in problems:
            digest.update(_name_bytes(f"{relative}\0{problem}\0"))
    capped = kind == "folder"  # the cap is on image files, not on Parquet or TFDS files of many images
    for relative, path in files:
        digest.update(_name_bytes(relative) + b"\0")
        _hash_file(digest, path, settings.max_file_bytes if capped else None)
    return digest.hexdigest()


def _name_bytes(name: str) -> bytes:
    """A file name's own bytes, also for a name that is not UTF-8."""
    return name.encode("utf-8", "surrogateescape")


def _hash_file(digest, path: str, max_bytes: int | None) -> None:
    try:
        size = sources.file_size(path)
        if max_bytes is not None and size > max_bytes:  # quarantined unread; its size stands for its bytes
            digest.update(f"\0above the cap: {size}\0".encode())
            return
        with sources.open_binary(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:  # quarantined by the check; once readable, its bytes change the fingerprint
        digest.update(b"\0unreadable\0")


def make_example(image: CheckedImage, label: int, relative: str) -> bytes:
    """The serialized tf.Example of one accepted image (keys: contract.features)."""
    def _bytes(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: _bytes(image.jpeg),
        features.LABEL_KEY: _int(label),
        features.HEIGHT_KEY: _int(image.height),
        features.WIDTH_KEY: _int(image.width),
        features.SOURCE_KEY: _bytes(relative.encode()),
        features.SHA256_KEY: _bytes(image.sha256.encode()),
    })).SerializeToString()


def hash_split(sha256: str, settings: IngestSettings, held_out_only: bool = False) -> str:
    """train, eval or test by the image's content hash, in the ratio of the settings' buckets; with
    `held_out_only`, eval or test in the ratio of theirs."""
    buckets = {layout.TRAIN_SPLIT: 0 if held_out_only else settings.train_buckets,
               layout.SELECTION_SPLIT: settings.eval_buckets, layout.TEST_SPLIT: settings.test_buckets}
    bucket = int(sha256[:8], 16) % sum(buckets.values())
    for split, count in buckets.items():
        if bucket < count:
            return split
        bucket -= count
    raise AssertionError("unreachable: the bucket is below the buckets' sum")


def divides_held_out(source_splits: Iterable[str | None]) -> bool:
    """Whether a source's held-out images are to be divided between eval and test: when it gives one held-out
    split (TensorFlow's cats_and_dogs_filtered has train and validation; a Parquet set train and test), the way
    its tutorials take a test split out of the validation images. A source that gives both keeps them."""
    held_out = set(source_splits) & {layout.SELECTION_SPLIT, layout.TEST_SPLIT}
    return len(held_out) == 1


def split_of(source_split: str | None, sha256: str, settings: IngestSettings, divide_held_out: bool) -> str:
    """The split an image goes to: its source's (train stays train), the held-out ones divided between eval
    and test when `divide_held_out`, by content hash when its source gives none."""
    if source_split is None:
        return hash_split(sha256, settings)
    if divide_held_out and source_split != layout.TRAIN_SPLIT:
        return hash_split(sha256, settings, held_out_only=True)
    return source_split


class Outcome(NamedTuple):
    """What happened to one item (a row of the ingest report); label and split only for an item kept."""

    item_id: str
    outcome: str  # one of OUTCOMES
    detail: str | None  # the reason, the duplicated item's id or the normalization done
    label: int | None = None
    split: str | None = None
    replaces: str | None = None  # the SHA-256 of a carried queue's image the kept item stands for


class _Usable(NamedTuple):
    """An item whose bytes are an image the pipeline can use."""

    item_id: str
    label: int
    split: str | None  # the source's own split, if it gives one
    image: CheckedImage


class _Kept(NamedTuple):
    """The one example written for a content hash."""

    split: str
    serialized: bytes


class _CheckItems(beam.DoFn):
    """A batch of items -> (sha256, _Usable) for each usable one, an Outcome on the QUARANTINED output for each
    other. Items come in batches so that TensorFlow decodes a batch's images in one call, on every core
    (ingest.images.check_images)."""

    def __init__(self, max_pixels: int, max_bytes: int, total: int):
        self._max_pixels = max_pixels
        self._max_bytes = max_bytes
        self._total = total
        self._seen = 0

    def process(self, batch: list[sources.Item]):
        readable: list[tuple[sources.Item, bytes]] = []
        for item in batch:
            if item.problem:
                yield beam.pvalue.TaggedOutput(QUARANTINED, Outcome(item.id, QUARANTINED, item.problem))
                continue
            try:
                readable.append((item, sources.read_bytes(item.unit, self._max_bytes)))
            except sources.FileTooLarge as rejection:
                yield beam.pvalue.TaggedOutput(QUARANTINED, Outcome(item.id, QUARANTINED, str(rejection)))
            except OSError as error:
                reason = f"cannot be read ({error.strerror or error})"
                yield beam.pvalue.TaggedOutput(QUARANTINED, Outcome(item.id, QUARANTINED, reason))
        verdicts = check_images([data for _, data in readable], self._max_pixels)
        for (item, _), verdict in zip(readable, verdicts, strict=True):
            if isinstance(verdict, RejectedImage):
                yield beam.pvalue.TaggedOutput(QUARANTINED, Outcome(item.id, QUARANTINED, str(verdict)))
            else:
                yield verdict.sha256, _Usable(item.id, item.label, item.split, verdict)
        before, self._seen = self._seen, self._seen + len(batch)
        if self._total >= _PROGRESS_EVERY and self._seen // _PROGRESS_EVERY > before // _PROGRESS_EVERY:
            progress.note(f"  ingest: worker {os.getpid()} checked {self._seen} of {self._total} items")


def _resolve_same_bytes(group, settings: IngestSettings, divide_held_out: bool,
                        carried: dict[str, tuple[int, str, int]], source_is_queue: bool, data_splits: dict):
    """All items with one content hash -> an Outcome for each, and on the KEPT output the one example kept.
    An image the span would carry from a labeled queue (`carried`: sha256 -> (span, source id, label)) is kept
    from the source, in the source's split, with the label a person gave it: the queue's, or the source's own
    when the source is a newer queue; its Outcome `replaces` the carried copy. `data_splits` (a queue's ingest:
    ingest.carried.data_splits): an image the data holds keeps the data's split."""
    sha256, usable = group
    usable = sorted(usable, key=lambda u: u.item_id)
    replaces = sha256 if sha256 in carried else None
    if replaces and not source_is_queue:
        label = carried[sha256][2]
        usable = [u._replace(label=label) for u in usable]
    if len({u.label for u in usable}) > 1:
        ids = [u.item_id for u in usable]
        for item_id in ids:
            others = ", ".join(i for i in ids if i != item_id)
            yield Outcome(item_id, QUARANTINED, f"same image bytes under another label: {others}")
        return
    first, *rest = usable
    split = data_splits.get(sha256) or split_of(first.split or next((u.split for u in rest if u.split), None),
                                                sha256, settings, divide_held_out)
    yield Outcome(first.item_id, NORMALIZED if first.image.normalized else ACCEPTED, first.image.normalized,
                  first.label, split, replaces)
    for duplicate in rest:
        yield Outcome(duplicate.item_id, DUPLICATE, first.item_id)
    yield beam.pvalue.TaggedOutput(_KEPT, _Kept(split, make_example(first.image, first.label, first.item_id)))


def mixed_order(items: list[sources.Item]) -> list[sources.Item]:
    """The items in a fixed pseudo-random order (by a hash of their id).

    Sources list class by class; written in that order a span's files hold all
    cats and then all dogs, so anything that reads a prefix (a shuffle buffer
    smaller than the data, an int8 calibration set, report samples) sees one
    class only.
    """
    return sorted(items, key=lambda item: hashlib.sha1(item.id.encode()).digest())


def _run_beam(items: list[sources.Item], staging: str, settings: IngestSettings,
              beam_args: Sequence[str], divide_held_out: bool, carried: dict,
              source_is_queue: bool = False, data_splits: dict | None = None) -> list[Outcome]:
    """Checks and writes the span's shards under `staging` (a path or URI that Beam's workers write to: on
    Dataflow or a portable runner they are other machines or processes); returns every item's Outcome."""
    options = beam.options.pipeline_options.PipelineOptions(list(beam_args))
    if staging.startswith("file://"):  # a URI tf.io.gfile reads and Beam's file systems do not
        staging = staging[len("file://"):]
    outcomes_file, items_file = posixpath.join(staging, "outcomes"), posixpath.join(staging, "items.tfrecord")
    # The items reach the workers as a file of batches, as any large input reaches Beam: beam.Create would put
    # them in the pipeline itself, pickled and bz2-compressed there (a second a few thousand paths; a Parquet
    # source's images with them), and send them to every worker with it.
    ordered = mixed_order(items)
    with tf.io.TFRecordWriter(items_file) as writer:
        for start in range(0, len(ordered), _BATCH):
            writer.write(pickle.dumps(ordered[start:start + _BATCH]))
    with beam.Pipeline(options=options) as pipeline:
        check = _CheckItems(settings.max_pixels, settings.max_file_bytes, len(items))
        checked = (pipeline | "Items" >> beam.io.ReadFromTFRecord(items_file) | "Spread" >> beam.Reshuffle()
                   | "Unpack" >> beam.Map(pickle.loads)
                   | "Check" >> beam.ParDo(check).with_outputs(QUARANTINED, main="usable"))
        resolved = (checked.usable
                    | "Group" >> beam.GroupByKey()
                    | "Resolve" >> beam.ParDo(_resolve_same_bytes, settings, divide_held_out, carried,
                                                source_is_queue, data_splits or {}).with_outputs(
                                                    _KEPT, main="outcomes"))
        by_split = resolved[_KEPT] | "BySplit" >> beam.Partition(lambda kept, _: SPLITS.index(kept.split),
                                                                  len(SPLITS))
        for index, split in enumerate(SPLITS):
            _ = (by_split[index] | f"Bytes{split}" >> beam.Map(lambda kept: kept.serialized)
                 | f"Write{split}" >> beam.io.WriteToTFRecord(posixpath.join(staging, split, "images"),
                                                              file_name_suffix=".tfrecord"))
        _ = ((resolved.outcomes, checked[QUARANTINED]) | beam.Flatten() | beam.Map(json.dumps)
             | beam.io.WriteToText(outcomes_file, file_name_suffix=".jsonl"))
    outcomes = []
    for path in sorted(tf.io.gfile.glob(outcomes_file + "*.jsonl")):
        with tf.io.gfile.GFile(path) as f:
            outcomes += [Outcome(*json.loads(line)) for line in f.read().splitlines() if line]
        tf.io.gfile.remove(path)
    tf.io.gfile.remove(items_file)
    return outcomes


def ingest(kind: str, location: str | os.PathLike, examples_root: str | os.PathLike,
           settings: IngestSettings = IngestSettings(),
           beam_args: Callable[[int], Sequence[str]] = lambda items: IN_PROCESS) -> IngestReport:
    """Writes a new span from a source, or reuses the latest if its data is the same.

    kind: one of sources.LISTERS: "folder" (class folders or Kaggle names), "parquet" or "tfds" (a TFDS data_dir).
    beam_args: the Beam arguments for a number of items.
    """
    location = str(location)
    if kind not in sources.LISTERS:
        raise sources.SourceError(f"unknown source kind {kind!r}; expected one of {sorted(sources.LISTERS)}")
    if not (tf.io.gfile.exists(location) if sources.is_uri(location) else os.path.exists(location)):
        raise sources.SourceError(f"{kind} source {location!r} does not exist")
    data_fingerprint, queue = _fingerprint(kind, location, settings), carrying.queue_identity(kind, location)
    examples_root = str(examples_root)
    reports = {span: load_report(examples_root, span) for span in existing_spans(examples_root)}
    recorded = numbers_used(examples_root)
    carrying.check_window(reports, settings.span_window, queue)
    if reports:
        latest = reports[max(reports)]
        # What the next span would carry: a queue whose newest span was removed after the latest span (only the
        # numbers file names it) is carried no more, so the latest span, which carries its superseded span, is
        # not the same data.
        queues, _ = carrying.to_carry(reports, max([*reports, *recorded]) + 1, queue, recorded)
        if latest is not None and (latest.source_fingerprint == carrying.fingerprint(data_fingerprint, queues)
                                   or carrying.holds(latest, queue, data_fingerprint)):
            return dataclasses.replace(latest, reused=True)
    # Above spans cut short too: a reader may have seen them.
    span = layout.next_number(highest_span_number(examples_root), examples_root, "span")
    queues, dropped = carrying.to_carry(reports, span, queue, recorded)
    items = list(sources.LISTERS[kind](location))

    # The span is built in a hidden folder beside its final place, where Beam's workers can write (on Dataflow
    # or a portable runner they are not this process), and published by contract.storage's protocol: renamed
    # into place, its ingest report (the commit record) last. The staging folder starts with a marker whose name
    # sorts before every other file, so that on an object store, where a rename goes object by object in name
    # order, a span cut short is marked incomplete from its first file on, and never read as a span another tool
    # wrote (before it comes only the folder's own directory marker: a folder with no file is cut short too).
    staging = posixpath.join(examples_root, storage.staging_name(STAGING_KIND))
    storage.backend.makedirs(staging)
    try:
        storage.backend.write(posixpath.join(staging, layout.SPAN_UNCOMMITTED), b"")
        started = time.time()
        carried = carrying.gather(examples_root, queues)
        divide = divides_held_out(item.split for item in items)
        splits = carrying.data_splits(examples_root, reports) if queue is not None else {}
        outcomes = _run_beam(items, staging, settings, beam_args(len(items)), divide, carried.images,
                             queue is not None, splits) if items else []
        carrying.write(staging, carried, {o.replaces for o in outcomes if o.replaces})
        seconds = time.time() - started
        logging.info("ingest: %d items in %.1f s", len(items), seconds)

        report = _report(f"{kind}:{location}", span, carrying.fingerprint(data_fingerprint, queues), outcomes,
                         carried.entries)
        report.seconds, report.labeled_queue, report.data_fingerprint = round(seconds, 3), queue, data_fingerprint
        report.not_carried = dropped
        if report.files_seen != len(items) or sum(report.counts.values()) != report.files_seen:
            raise RuntimeError(f"ingest lost track of items: {len(items)} listed, {report.files_seen} with an "
                               f"outcome, counts {report.counts}")
        if not report.examples_from_source:
            raise NoUsableImagesError(f"no usable images in {kind} source {location}:\n{report.table()}")
        for split in SPLITS:
            tf.io.gfile.makedirs(posixpath.join(staging, split))  # an empty split is still a split
        record_number(examples_root, span, queue,
                      {number: report.labeled_queue for number, report in reports.items() if report is not None})
        publish_span(staging, layout.span_dir(examples_root, span), report)
    finally:
        storage.backend.rmtree(staging)
    return report


def publish_span(staging: str, target: str, report: IngestReport) -> None:
    """The staged span (its marker first, then its TFRecords) becomes `target`, its report written last."""
    storage.publish(staging, target, REPORT_FILE, json.dumps(report.to_json(), indent=2).encode())
    storage.backend.remove(posixpath.join(target, layout.SPAN_UNCOMMITTED))
    for split in SPLITS:  # an object store has no empty folders: an empty split's is made again
        storage.backend.makedirs(posixpath.join(target, split))


def _report(source: str, span: int, fingerprint: str, outcomes: Iterable[Outcome],
            carried: list[dict]) -> IngestReport:
    """The span's report: the source's outcomes, and its examples counted with the ones it carries."""
    rows = sorted(outcomes, key=lambda o: o.item_id)
    return IngestReport(
        source=source, span=span, reused=False, source_fingerprint=fingerprint, files_seen=len(rows),
        counts={kind: sum(1 for r in rows if r.outcome == kind) for kind in OUTCOMES},
        examples_per_label={name: sum(1 for r in rows if r.label == index)
                            + sum(c["examples_per_label"][name] for c in carried)
                            for index, name in enumerate(features.LABEL_NAMES)},
        examples_per_split={split: sum(1 for r in rows if r.split == split)
                            + sum(c["examples_per_split"][split] for c in carried) for split in SPLITS},
        carried=carried,
        quarantined=[{"file": r.item_id, "reason": r.detail} for r in rows if r.outcome == QUARANTINED],
        duplicates=[{"file": r.item_id, "duplicate_of": r.detail} for r in rows if r.outcome == DUPLICATE],
        normalized=[{"file": r.item_id, "change": r.detail} for r in rows if r.outcome == NORMALIZED],
    )
