"""Spans written by another tool (no ingest report), read record by record before ImportExampleGen.

Ingest checks every image before it writes a span; a span from elsewhere gets
this pass instead: every TFRecord must read to its end and every record must be
a tf.Example whose `image` is one JPEG (the schema check cannot see either).
"""

from __future__ import annotations

import gzip
import os
import posixpath
import zlib

import tensorflow as tf

from config import DataConfig
from contract import features, layout, storage
from contract.errors import first_line, printable
from ingest.span_report import existing_spans, load_report

_JPEG_START = b"\xff\xd8\xff"
# A TFRecord record's frame: its length (8 bytes, little-endian) and that length's masked CRC-32C (4), the data,
# the data's masked CRC-32C (4).
_HEADER_BYTES, _FOOTER_BYTES = 12, 4
_PIECE_BYTES = 16 << 20


def foreign_span_problems(examples_root: str | os.PathLike, span: int, max_per_file: int = 3,
                          max_pixels: int = DataConfig.max_image_pixels) -> list[str]:
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
            found = []
            index = -1
            try:
                framing = _framing_problem(path)
                if framing:
                    problems.append(f"{shown} {framing}")
                    continue
                for index, record in enumerate(tf.data.TFRecordDataset(path, compression_type=_compression(name))):
                    problem = _record_problem(record.numpy(), max_pixels)
                    if problem:
                        found.append(f"{shown} record {index}: {problem}")
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                found.append(f"{shown} record {index + 1}: not a readable TFRecord (truncated or corrupt: "
                             f"{first_line(error)})")
            except tf.errors.OpError as error:  # not allowed to read it, gone meanwhile, a link to nothing
                found.append(f"{shown}: cannot be read ({_reason(error)})")
            problems += found[:max_per_file]
            if len(found) > max_per_file:
                problems.append(f"{shown}: {len(found) - max_per_file} more records with problems")
    return problems


def window_problems(examples_root: str | os.PathLike, window: int,
                    max_pixels: int = DataConfig.max_image_pixels) -> list[str]:
    """foreign_span_problems of every span of the newest `window` that has no ingest report."""
    return [problem for span in existing_spans(examples_root)[-window:] if load_report(examples_root, span) is None
            for problem in foreign_span_problems(examples_root, span, max_pixels=max_pixels)]


def examples_in_window(examples_root: str | os.PathLike, window: int, up_to: int) -> int | None:
    """Examples in the newest `window` spans, for choosing how Beam runs the components: a span's ingest report
    counts its own; a span another tool wrote is counted record by record, up to `up_to` examples in all (the
    count that decides is known by then). None when a span's files cannot be read to that count (the run's check
    of those spans names the fault) or there is no span."""
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
        try:
            if any(tf.io.gfile.isdir(path) or storage.special_kind(path) or
                   _framing_problem(path) for path in paths):
                return None
        except tf.errors.OpError:
            return None
        # One dataset per compression, not one per file: a span of many small shards is counted in one pass.
        for compression in ("", "GZIP"):
            files = [path for path in paths if _compression(path) == compression]
            if files and total < up_to:
                records = tf.data.TFRecordDataset(files, compression_type=compression)
                try:
                    total += int(records.take(up_to - total).reduce(0, lambda count, _: count + 1))
                except tf.errors.OpError:
                    return None
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


def _framing_problem(path: str) -> str | None:
    """What is wrong with a TFRecord file's framing, read from its records' headers alone, or None. TensorFlow's
    reader allocates whatever length a header claims before it reads the data (a 15-byte file claiming a terabyte
    kills the process; a megabyte of gzip claiming a gigabyte costs the gigabyte), and takes fewer than 12 stray
    bytes at the end for the end of the file, where Beam's reader (ImportExampleGen's) fails without naming the
    file. A plain file is walked by seeking; a gzip file is decompressed in pieces, so memory stays bounded."""
    def problem(index: int, what: str) -> str:
        return f"record {index}: not a readable TFRecord (truncated or corrupt: {what})"

    with tf.io.gfile.GFile(path, "rb") as raw:
        if not _compression(path):
            size, offset, index = tf.io.gfile.stat(path).length, 0, 0
            while offset < size:
                if size - offset < _HEADER_BYTES:
                    return problem(index, f"{size - offset} stray bytes at the end, fewer than a record's "
                                          f"{_HEADER_BYTES}-byte header")
                raw.seek(offset)
                length = int.from_bytes(raw.read(_HEADER_BYTES)[:8], "little")
                offset, index = offset + _HEADER_BYTES + length + _FOOTER_BYTES, index + 1
                if offset > size:
                    return problem(index - 1, f"its header claims {length:,} bytes, past the end of the file at "
                                              f"{size:,}")
            return None
        index = 0
        try:
            with gzip.GzipFile(fileobj=raw) as stream:
                while header := stream.read(_HEADER_BYTES):
                    if len(header) < _HEADER_BYTES:
                        return problem(index, f"{len(header)} stray bytes at the end of the data, fewer than a "
                                              f"record's {_HEADER_BYTES}-byte header")
                    length = int.from_bytes(header[:8], "little")
                    left = length + _FOOTER_BYTES
                    while left and (piece := stream.read(min(left, _PIECE_BYTES))):
                        left -= len(piece)
                    if left:
                        return problem(index, f"its header claims {length:,} bytes, past the end of the data")
                    index += 1
        except (OSError, EOFError, zlib.error) as error:  # not gzip, cut short, a damaged deflate stream
            return problem(index, f"the gzip data cannot be read: {first_line(error)}")
    return None


def _compression(name: str) -> str:
    return "GZIP" if name.endswith(".gz") else ""


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
