"""Spans written by another tool (no ingest report), read record by record before ImportExampleGen.

Ingest checks every image before it writes a span; a span from elsewhere gets
this pass instead: every TFRecord must read to its end and every record must be
a tf.Example whose `image` is one JPEG (the schema check cannot see either).
"""

from __future__ import annotations

import os
import posixpath

import tensorflow as tf

from config import DataConfig
from contract import features, layout, storage
from contract.errors import first_line, printable
from ingest import framing
from ingest.span_report import existing_spans, load_report

_JPEG_START = b"\xff\xd8\xff"


def record_limit(max_file_mb: int) -> int:
    """The most bytes one example's record may hold: its image within ingest's file size limit, and a MiB for the
    other features."""
    return (max_file_mb + 1) << 20


_MAX_RECORD_BYTES = record_limit(DataConfig.max_file_mb)


def foreign_span_problems(examples_root: str | os.PathLike, span: int, max_per_file: int = 3,
                          max_pixels: int = DataConfig.max_image_pixels,
                          max_record_bytes: int = _MAX_RECORD_BYTES) -> list[str]:
    """What makes a span written by another tool (no ingest report) unusable, one line per problem.

    Ingest checks every image before it writes a span; a span from elsewhere
    gets this pass instead, before ImportExampleGen copies it: every TFRecord
    must read to its end and every record must be a tf.Example whose `image`
    is one JPEG of at most `max_pixels` pixels, as ingest holds images to
    (the schema check cannot see either; labels and the other
    features are its job). Lines name the file and the record; after
    `max_per_file` problems in one file the rest are counted.
    """
    problems = []
    for split in layout.SPLITS:
        try:
            names = _entries(examples_root, span, split)
        except UnicodeDecodeError:
            problems.append(f"{layout.span_name(span)}/{split}: holds a file whose name is not UTF-8 text")
            continue
        for name in names:
            path = posixpath.join(layout.span_dir(examples_root, span), split, name)
            shown = printable(f"{layout.span_name(span)}/{split}/{name}")  # a newline in a name forges no line
            if tf.io.gfile.isdir(path):  # ImportExampleGen reads every entry of a split as a file
                problems.append(f"{shown}: a folder where the split's TFRecord files are expected")
                continue
            if storage.special_kind(path):  # a FIFO's reader would wait for a writer forever
                problems.append(f"{shown}: not a regular file (a pipe, socket or device)")
                continue
            problems += _file_problems(path, shown, max_per_file, max_pixels, max_record_bytes)
    return problems


def _file_problems(path: str, shown: str, max_per_file: int, max_pixels: int, max_record_bytes: int) -> list[str]:
    """One file's problems: its framing (framing.walk), then each record as TensorFlow reads it."""
    other = framing.other_compression(path)
    if other:
        return [f"{shown}: compressed by its name ({other}), which the data gate cannot read: write the span's files "
                "plain or gzip-compressed (.gz)"]
    found, count, index = [], 0, -1
    try:
        frames = framing.walk(path, max_record_bytes)
        if frames.problem:
            return [f"{shown} record {frames.records}: {frames.problem}"]
        for index, record in enumerate(tf.data.TFRecordDataset(path, compression_type=framing.compression(path))):
            problem = _record_problem(record.numpy(), max_pixels)
            if problem:
                count += 1
                if len(found) < max_per_file:  # the rest are counted, not kept: a file may hold millions
                    found.append(f"{shown} record {index}: {problem}")
        if index + 1 < frames.records:
            count += 1
            further = frames.records - index - 1
            found.append(f"{shown} record {index + 1}: TensorFlow's reader stops there, before the file's {further} "
                         f"further record{'s' if further != 1 else ''} (an empty gzip member ends its reading): "
                         "write the file again as one gzip member")
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        count += 1
        found.append(f"{shown} record {index + 1}: not a readable TFRecord (truncated or corrupt: "
                     f"{first_line(error)})")
    except tf.errors.OpError as error:  # not allowed to read it, gone meanwhile, a link to nothing
        return [f"{shown}: cannot be read ({_reason(error)})"]
    return found + ([f"{shown}: {count - len(found)} more records with problems"] if count > len(found) else [])


def window_problems(examples_root: str | os.PathLike, window: int, max_pixels: int = DataConfig.max_image_pixels,
                    max_record_bytes: int = _MAX_RECORD_BYTES) -> list[str]:
    """foreign_span_problems of every span of the newest `window` that has no ingest report."""
    return [problem for span in existing_spans(examples_root)[-window:] if load_report(examples_root, span) is None
            for problem in foreign_span_problems(examples_root, span, max_pixels=max_pixels,
                                                 max_record_bytes=max_record_bytes)]


def examples_in_window(examples_root: str | os.PathLike, window: int, up_to: int) -> int | None:
    """Examples in the newest `window` spans, for choosing how Beam runs the components: a span's ingest report
    counts its own; a span another tool wrote is counted from its records' headers (ingest.framing), up to `up_to`
    examples in all (the count that decides is known by then). None when a span's files cannot be read to that
    count (the run's check of those spans names the fault) or there is no span."""
    spans = existing_spans(examples_root)[-window:]
    total = 0
    for span in spans:
        report = load_report(examples_root, span)
        if report is not None:
            total += report.examples_written
            continue
        try:
            paths = [posixpath.join(layout.span_dir(examples_root, span), split, name) for split in layout.SPLITS
                     for name in _entries(examples_root, span, split)]
        except UnicodeDecodeError:
            return None
        if any(tf.io.gfile.isdir(path) or storage.special_kind(path) or framing.other_compression(path)
               for path in paths):
            return None
        for path in paths:  # counted from the records' headers, as Beam's reader will read them
            if total >= up_to:
                break
            try:
                frames = framing.walk(path, _MAX_RECORD_BYTES)
            except tf.errors.OpError:
                return None
            if frames.problem:
                return None
            total += min(frames.records, up_to - total)
    return total if spans else None


def _entries(examples_root: str | os.PathLike, span: int, split: str) -> list[str]:
    """The names in a span's split folder, sorted; none when there is no such folder. tf.io.gfile raises
    UnicodeDecodeError on a name that is not UTF-8."""
    folder = posixpath.join(layout.span_dir(examples_root, span), split)
    return sorted(tf.io.gfile.listdir(folder)) if tf.io.gfile.isdir(folder) else []


def _reason(error: tf.errors.OpError) -> str:
    """The file system's reason in a TensorFlow error, without the op's decorations around it:
    "{{function_node ...}} /path; No such file or directory [Op:IteratorGetNext] name: " -> "No such file or
    directory"."""
    return first_line(error).rsplit("; ", 1)[-1] or type(error).__name__


def _record_problem(serialized: bytes, max_pixels: int) -> str | None:
    try:
        example = tf.train.Example.FromString(serialized)
    except Exception:  # protobuf's DecodeError
        return "not a tf.Example"
    feature = example.features.feature
    images = feature[features.IMAGE_KEY].bytes_list.value if features.IMAGE_KEY in feature else []
    if len(images) != 1:
        return f"feature '{features.IMAGE_KEY}' must hold one JPEG, holds {len(images)} values"
    if not images[0].startswith(_JPEG_START):
        return f"feature '{features.IMAGE_KEY}' is not JPEG data (starts with {images[0][:4].hex(' ') or 'nothing'})"
    try:
        height, width, _ = tf.image.extract_jpeg_shape(images[0]).numpy().tolist()
    except tf.errors.InvalidArgumentError:
        return f"feature '{features.IMAGE_KEY}' is a damaged JPEG (its header cannot be read)"
    if width * height > max_pixels:  # Transform would decode it whole
        return (f"feature '{features.IMAGE_KEY}' is a {width}x{height} JPEG: more than the limit of {max_pixels} "
                "pixels (--max-image-pixels)")
    return None  # labels and the other features: ExampleValidator checks them against the schema
