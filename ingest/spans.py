"""Turns an image folder into a span of tf.Example TFRecords for ImportExampleGen.

Layout under the examples root:
    span-<N>/images.tfrecord.gz     the accepted images, one tf.Example each
    span-<N>/ingest_report.json     what happened to every file seen
A span is written to a hidden temporary folder and renamed into place, so
ImportExampleGen never sees half a span. Ingesting a folder whose content
equals the latest span's source writes nothing: the pipeline then finds the
same span, with the same fingerprint, and reruns from cache.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil

import tensorflow as tf

from ingest import class_folders
from ingest.images import DEFAULT_MAX_PIXELS, CheckedImage, RejectedImage, check_image
from trainer import features

SPAN_PATTERN = "span-{SPAN}/*.tfrecord.gz"
REPORT_FILE = "ingest_report.json"
RECORDS_FILE = "images.tfrecord.gz"
_SPAN_DIR = re.compile(r"^span-(\d+)$")

ACCEPTED = "accepted"
NORMALIZED = "normalized"
DUPLICATE = "duplicate"
QUARANTINED = "quarantined"
OUTCOMES = (ACCEPTED, NORMALIZED, DUPLICATE, QUARANTINED)


class NoUsableImagesError(ValueError):
    """Every file was quarantined; the report says why."""


@dataclasses.dataclass
class IngestReport:
    data_dir: str
    span: int
    reused: bool  # True when the latest span already held exactly this data
    source_fingerprint: str
    files_seen: int
    counts: dict[str, int]  # per outcome; they add up to files_seen
    examples_per_label: dict[str, int]
    quarantined: list[dict[str, str]]  # {"file", "reason"}
    duplicates: list[dict[str, str]]  # {"file", "duplicate_of"}
    normalized: list[dict[str, str]]  # {"file", "change"}

    @property
    def examples_written(self) -> int:
        return self.counts[ACCEPTED] + self.counts[NORMALIZED]

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"examples_written": self.examples_written}

    @classmethod
    def from_json(cls, data: dict) -> "IngestReport":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def table(self, max_listed: int = 20) -> str:
        lines = [f"Ingest of {self.data_dir} -> span {self.span}"
                 + (" (unchanged data: existing span reused)" if self.reused else ""),
                 f"  {'files seen':<14}{self.files_seen:>8}"]
        lines += [f"  {outcome:<14}{self.counts[outcome]:>8}" for outcome in OUTCOMES]
        lines.append("  examples: " + ", ".join(f"{k} {v}" for k, v in self.examples_per_label.items()))
        for entry in self.quarantined[:max_listed]:
            lines.append(f"  quarantined {entry['file']}: {entry['reason']}")
        if len(self.quarantined) > max_listed:
            lines.append(f"  ... and {len(self.quarantined) - max_listed} more quarantined (see {REPORT_FILE})")
        return "\n".join(lines)


def existing_spans(examples_root: str | os.PathLike) -> list[int]:
    root = pathlib.Path(examples_root)
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := _SPAN_DIR.match(p.name)))


def load_report(examples_root: str | os.PathLike, span: int) -> IngestReport:
    path = pathlib.Path(examples_root) / f"span-{span}" / REPORT_FILE
    return IngestReport.from_json(json.loads(path.read_text()))


def _fingerprint(files: list[class_folders.SourceFile]) -> str:
    digest = hashlib.sha256()
    for source in files:
        digest.update(source.relative.encode() + b"\0")
        digest.update(hashlib.sha256(source.path.read_bytes()).digest())
    return digest.hexdigest()


def make_example(image: CheckedImage, label: int, relative: str) -> bytes:
    """The serialized tf.Example of one accepted image (keys: trainer.features)."""
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


def ingest_folder(data_dir: str | os.PathLike, examples_root: str | os.PathLike,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> IngestReport:
    """Writes a new span from `data_dir`, or reuses the latest if its data is the same."""
    files = class_folders.find_files(data_dir)
    fingerprint = _fingerprint(files)
    examples_root = pathlib.Path(examples_root)
    spans = existing_spans(examples_root)
    if spans:
        latest = load_report(examples_root, spans[-1])
        if latest.source_fingerprint == fingerprint:
            return dataclasses.replace(latest, reused=True)
    span = (spans[-1] + 1) if spans else 1

    outcomes: dict[str, tuple[str, str | None]] = {}  # relative -> (outcome, detail)
    checked = {}  # relative -> (CheckedImage, label)
    for source in files:
        if source.problem:
            outcomes[source.relative] = (QUARANTINED, source.problem)
            continue
        try:
            image = check_image(source.path.read_bytes(), max_pixels)
        except RejectedImage as rejection:
            outcomes[source.relative] = (QUARANTINED, rejection.reason)
            continue
        checked[source.relative] = (image, source.label)

    # The same bytes twice would let one image sit in both train and eval;
    # under two labels, neither label can be trusted.
    by_hash = collections.defaultdict(list)
    for relative, (image, label) in checked.items():
        by_hash[image.sha256].append(relative)
    kept = []
    for relatives in by_hash.values():
        labels = {checked[r][1] for r in relatives}
        if len(labels) > 1:
            for r in relatives:
                others = ", ".join(o for o in relatives if o != r)
                outcomes[r] = (QUARANTINED, f"same image bytes under another label: {others}")
            continue
        first, *rest = relatives
        kept.append(first)
        image = checked[first][0]
        outcomes[first] = (NORMALIZED, image.normalized) if image.normalized else (ACCEPTED, None)
        for r in rest:
            outcomes[r] = (DUPLICATE, first)

    report = IngestReport(
        data_dir=str(data_dir), span=span, reused=False, source_fingerprint=fingerprint,
        files_seen=len(files),
        counts={o: sum(1 for outcome, _ in outcomes.values() if outcome == o) for o in OUTCOMES},
        examples_per_label={name: sum(1 for r in kept if checked[r][1] == i)
                            for i, name in enumerate(features.LABEL_NAMES)},
        quarantined=[{"file": r, "reason": d} for r, (o, d) in sorted(outcomes.items()) if o == QUARANTINED],
        duplicates=[{"file": r, "duplicate_of": d} for r, (o, d) in sorted(outcomes.items()) if o == DUPLICATE],
        normalized=[{"file": r, "change": d} for r, (o, d) in sorted(outcomes.items()) if o == NORMALIZED],
    )
    assert sum(report.counts.values()) == report.files_seen, "every file must have exactly one outcome"
    if not kept:
        raise NoUsableImagesError(f"no usable images in {data_dir}:\n{report.table()}")

    examples_root.mkdir(parents=True, exist_ok=True)
    staging = examples_root / f".span-{span}.incomplete"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(str(staging / RECORDS_FILE), options) as writer:
        for relative in sorted(kept):
            image, label = checked[relative]
            writer.write(make_example(image, label, relative))
    (staging / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=2))
    staging.rename(examples_root / f"span-{span}")
    return report
