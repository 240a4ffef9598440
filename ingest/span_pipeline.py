"""The Beam pipeline that turns a span's items into its shards (ingest.spans runs it).

Each item's bytes are checked (ingest.images, a batch at a time), the items with the same content hash resolved to
one example (the others are duplicates, or all are quarantined when their labels disagree), each example given its
split and written to that split's TFRecords; every item's Outcome goes to a file the caller reads back.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
import pickle
import posixpath
from typing import Iterable, NamedTuple, Sequence

import apache_beam as beam
import tensorflow as tf

from config import DataConfig, beam_policy
from contract import features, layout, progress, storage
from ingest import beam_workers, sources
from ingest.images import CheckedImage, RejectedImage, check_images
from ingest.span_report import ACCEPTED, DUPLICATE, NORMALIZED, QUARANTINED

beam_policy.faster_beam()

SPLITS = layout.SPLITS
_PROGRESS_EVERY = 1000
# Items a Check element holds: enough that one decoding call per batch costs little beside its images (64
# decoded at 0.16 ms an image on 2 cores, 256 at 0.18), few enough that a batch of photos is a few MB and a source
# of a few hundred items still makes several elements for Beam to spread over workers.
_BATCH = 64
# The most file bytes a check holds at once (a batch of photos is a few MB; 64 large BMPs would be gigabytes).
_CHECK_BYTES = 32 << 20


def make_example(image: CheckedImage, label: int, relative: str) -> bytes:
    """The serialized tf.Example of one accepted image (keys: contract.features).

    Written field by field: protocol buffers' Python classes copy the image into a message and out again, 17-29 us
    an example against 7 here, every example of an ingest on its one busy thread. A serialized message is its fields
    one after the other, a map one entry after another; tests/ingest/test_example_bytes.py parses these back against
    the same example built with tf.train.Example."""
    features_bytes = b"".join((
        _bytes_entry(features.IMAGE_KEY, image.jpeg), _int_entry(features.LABEL_KEY, label),
        _int_entry(features.HEIGHT_KEY, image.height), _int_entry(features.WIDTH_KEY, image.width),
        _bytes_entry(features.SOURCE_KEY, relative.encode()), _bytes_entry(features.SHA256_KEY, image.sha256.encode())))
    return _LEN_FIELD_1 + _varint(len(features_bytes)) + features_bytes


_LEN_FIELD_1, _LEN_FIELD_2 = b"\x0a", b"\x12"  # field 1 / field 2, length-delimited (wire type 2)


def _varint(value: int) -> bytes:
    """Protocol buffers' base-128 varint of a length (never negative)."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes_entry(key: str, value: bytes) -> bytes:
    """One entry of Features.feature (field 1), key -> Feature(bytes_list=BytesList(value=[value]))."""
    key_field = _key_field(key)
    list_length = 1 + len(_varint(len(value))) + len(value)  # BytesList: its value (field 1)
    feature_length = 1 + len(_varint(list_length)) + list_length  # Feature: bytes_list (field 1)
    entry_length = len(key_field) + 1 + len(_varint(feature_length)) + feature_length  # the entry: key 1, value 2
    return b"".join((_LEN_FIELD_1, _varint(entry_length), key_field, _LEN_FIELD_2, _varint(feature_length),
                     _LEN_FIELD_1, _varint(list_length), _LEN_FIELD_1, _varint(len(value)), value))


@functools.cache
def _key_field(key: str) -> bytes:
    return _LEN_FIELD_1 + _varint(len(key.encode())) + key.encode()


@functools.lru_cache(maxsize=1 << 14)
def _int_entry(key: str, value: int) -> bytes:
    """One entry of Features.feature, key -> Feature(int64_list=Int64List(value=[value])), as protocol buffers
    write it (labels and sides: a few thousand values, each made once)."""
    feature = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Features(feature={key: feature}).SerializeToString()


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


class _CheckItems(beam.DoFn):
    """A batch of items -> (sha256, _Usable) for each usable one, an Outcome (as its line of JSON) on the QUARANTINED
    output for each other. Items come in batches so that TensorFlow decodes a batch's images in one call, on every core
    (ingest.images.check_images)."""

    def __init__(self, max_pixels: int, max_bytes: int, total: int):
        self._max_pixels = max_pixels
        self._max_bytes = max_bytes
        self._total = total
        self._seen = 0

    def process(self, batch: list[sources.Item]):
        readable: list[tuple[sources.Item, bytes]] = []
        held = 0
        for item in batch:
            if item.problem:
                yield _quarantined(item.id, item.problem)
                continue
            try:
                readable.append((item, sources.read_bytes(item.unit, self._max_bytes)))
                held += len(readable[-1][1])
            except sources.RefusedFile as rejection:
                yield _quarantined(item.id, str(rejection))
            except OSError as error:
                reason = f"cannot be read ({error.strerror or error})"
                yield _quarantined(item.id, reason)
            # Checked as soon as the files read come to _CHECK_BYTES: a batch of large files is checked a few
            # at a time, never all of them held at once.
            if held >= _CHECK_BYTES:
                yield from self._checked(readable)
                readable, held = [], 0
        yield from self._checked(readable)
        before, self._seen = self._seen, self._seen + len(batch)
        if self._total >= _PROGRESS_EVERY and self._seen // _PROGRESS_EVERY > before // _PROGRESS_EVERY:
            progress.note(f"  ingest: worker {os.getpid()} checked {self._seen} of {self._total} items")

    def _checked(self, readable: list[tuple[sources.Item, bytes]]):
        verdicts = check_images([data for _, data in readable], self._max_pixels)
        for (item, _), verdict in zip(readable, verdicts, strict=True):
            if isinstance(verdict, RejectedImage):
                yield _quarantined(item.id, str(verdict))
            else:
                yield verdict.sha256, _Usable(item.id, item.label, item.split, verdict)


def _quarantined(item_id: str, reason: str):
    return beam.pvalue.TaggedOutput(QUARANTINED, json.dumps(Outcome(item_id, QUARANTINED, reason)))


def _resolve_same_bytes(group, settings: IngestSettings, divide_held_out: bool,
                        carried: dict[str, tuple[int, str, int]], source_is_queue: bool, data_splits: dict):
    """All items with one content hash -> an Outcome for each (as its line of JSON), and on its split's output the
    one example kept (serialized).
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
            yield json.dumps(Outcome(item_id, QUARANTINED, f"same image bytes under another label: {others}"))
        return
    first, *rest = usable
    split = data_splits.get(sha256) or split_of(first.split or next((u.split for u in rest if u.split), None),
                                                sha256, settings, divide_held_out)
    if split not in SPLITS:  # Beam drops an output no writer takes, without a word: the report would count it
        raise ValueError(f"{first.item_id}: split {split!r} is none of the span's {', '.join(SPLITS)}")
    yield json.dumps(Outcome(first.item_id, NORMALIZED if first.image.normalized else ACCEPTED,
                             first.image.normalized, first.label, split, replaces))
    for duplicate in rest:
        yield json.dumps(Outcome(duplicate.item_id, DUPLICATE, first.item_id))
    # Straight to its split's writer: each step an example passes through costs Beam's per-element handling
    yield beam.pvalue.TaggedOutput(split, make_example(first.image, first.label, first.item_id))


def mixed_order(items: list[sources.Item]) -> list[sources.Item]:
    """The items in a fixed pseudo-random order (by a hash of their id).

    Sources list class by class; written in that order a span's files hold all
    cats and then all dogs, so anything that reads a prefix (a shuffle buffer
    smaller than the data, an int8 calibration set, report samples) sees one
    class only.
    """
    return sorted(items, key=lambda item: hashlib.sha1(item.id.encode()).digest())


def write_shards(items: list[sources.Item], staging: str, settings: IngestSettings,
              beam_args: Sequence[str], divide_held_out: bool, carried: dict,
              source_is_queue: bool = False, data_splits: dict | None = None) -> list[Outcome]:
    """Checks and writes the span's shards under `staging` (a path or URI that Beam's workers write to: on
    Dataflow or a portable runner they are other machines or processes); returns every item's Outcome."""
    options = beam.options.pipeline_options.PipelineOptions(list(beam_args))
    if staging.startswith("file://"):  # a URI tf.io.gfile reads and Beam's file systems do not
        staging = staging[len("file://"):]
    outcomes_file, items_file = posixpath.join(staging, "outcomes"), posixpath.join(staging, "items.txt")
    ordered = mixed_order(items)
    batches = [ordered[start:start + _BATCH] for start in range(0, len(ordered), _BATCH)]
    # Items that name their files reach the workers as a file of batches (a line each), as any large input reaches
    # Beam: beam.Create would put them in the pipeline itself, pickled and bz2-compressed there (about a second for
    # 8,000 paths). Items that carry their image bytes (Parquet, TFDS) still go that way: as a file they would be
    # a second copy of the source on the root's disk.
    by_file = not any(isinstance(item.unit, bytes) for item in items)
    if by_file:
        storage.backend.write(items_file, b"\n".join(base64.b64encode(pickle.dumps(batch)) for batch in batches))
    with beam_workers.watched(beam_args), beam.Pipeline(options=options) as pipeline:
        check = _CheckItems(settings.max_pixels, settings.max_file_bytes, len(items))
        if by_file:
            listed = (pipeline | "Items" >> beam.io.ReadFromText(items_file) | "Spread" >> beam.Reshuffle()
                      | "Unpack" >> beam.Map(lambda line: pickle.loads(base64.b64decode(line))))
        else:
            listed = pipeline | "Items" >> beam.Create(batches, reshuffle=True)
        checked = listed | "Check" >> beam.ParDo(check).with_outputs(QUARANTINED, main="usable")
        resolved = (checked.usable
                    | "Group" >> beam.GroupByKey()
                    | "Resolve" >> beam.ParDo(_resolve_same_bytes, settings, divide_held_out, carried,
                                                source_is_queue, data_splits or {}).with_outputs(
                                                    *SPLITS, main="outcomes"))
        for split in SPLITS:
            _ = resolved[split] | f"Write{split}" >> beam.io.WriteToTFRecord(
                posixpath.join(staging, split, "images"), file_name_suffix=".tfrecord")
        _ = ((resolved.outcomes, checked[QUARANTINED]) | beam.Flatten()
             | beam.io.WriteToText(outcomes_file, file_name_suffix=".jsonl"))
    outcomes = []
    for path in sorted(tf.io.gfile.glob(outcomes_file + "*.jsonl")):
        with tf.io.gfile.GFile(path) as f:
            outcomes += [Outcome(*json.loads(line)) for line in f.read().splitlines() if line]
        tf.io.gfile.remove(path)
    if by_file:
        storage.backend.remove(items_file)
    return outcomes
