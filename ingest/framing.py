"""A TFRecord file's framing, read from its records' headers alone before TensorFlow reads the file.

TensorFlow's reader allocates whatever length a record's header claims before
it reads the data (a 15-byte file claiming a terabyte kills the process), takes
fewer than 12 stray bytes at the end for the end of the file, and stops at an
empty gzip member; Beam's reader (ImportExampleGen's) fails on the first two
without naming the file and reads on past the third. So a span written by
another tool has its files walked here first: a plain file by seeking from
header to header, a gzip file by decompressing it in pieces (memory stays
bounded), each header's length checked against its checksum, a limit and what
the file holds. The walk counts the records as Beam will read them.
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib

import tensorflow as tf

from contract.errors import first_line
from traffic.tfrecord import masked_crc

HEADER_BYTES, FOOTER_BYTES = 12, 4  # a length (8 bytes) and its masked CRC-32C; after the data, the data's CRC
_PIECE_BYTES = 16 << 20
# The compressions Beam's reader also knows by name (apache_beam.io.filesystem.CompressionTypes, the suffix in any
# case): ImportExampleGen would read them, TensorFlow's reader cannot, so the gate cannot check what they hold.
OTHER_COMPRESSIONS = (".bz2", ".deflate", ".zst", ".zstd", ".xz", ".lzma")


@dataclasses.dataclass(frozen=True)
class Framing:
    records: int  # whole records before the problem, or in the file
    problem: str | None = None


def compression(name: str) -> str:
    """TensorFlow's compression type for a span file, chosen by its name as Beam's reader chooses it."""
    return "GZIP" if name.lower().endswith(".gz") else ""


def other_compression(name: str) -> str | None:
    """The suffix of a compression Beam reads and TensorFlow does not, or None."""
    return next((suffix for suffix in OTHER_COMPRESSIONS if name.lower().endswith(suffix)), None)


def _unreadable(what: str) -> str:
    return f"not a readable TFRecord (truncated or corrupt: {what})"


def _stray(count: int, where: str) -> str:
    return _unreadable(f"{count} stray byte{'s' if count != 1 else ''} at the end of the {where}, fewer than a "
                       f"record's {HEADER_BYTES}-byte header")


def _header_problem(header: bytes, max_record_bytes: int) -> str | None:
    if masked_crc(header[:8]) != header[8:]:
        return _unreadable("its length's checksum does not match")
    length = int.from_bytes(header[:8], "little")
    if length > max_record_bytes:
        return f"its header claims {length:,} bytes, above the limit of {max_record_bytes:,} for one example " \
               "(--max-file-mb)"
    return None


def walk(path: str, max_record_bytes: int) -> Framing:
    """The file's records counted from their headers, up to the first problem (`problem` then names it, without
    the record's number: "record N: " is the caller's)."""
    with tf.io.gfile.GFile(path, "rb") as raw:
        if compression(path):
            return _walk_gzip(raw, max_record_bytes)
        size, offset, index = tf.io.gfile.stat(path).length, 0, 0
        while offset < size:
            if size - offset < HEADER_BYTES:
                return Framing(index, _stray(size - offset, "file"))
            raw.seek(offset)
            header = raw.read(HEADER_BYTES)
            problem = _header_problem(header, max_record_bytes)
            if problem:
                return Framing(index, problem)
            length = int.from_bytes(header[:8], "little")
            if size - offset < HEADER_BYTES + length + FOOTER_BYTES:
                return Framing(index, _unreadable(f"its header claims {length:,} bytes, past the end of the file "
                                                  f"at {size:,}"))
            offset, index = offset + HEADER_BYTES + length + FOOTER_BYTES, index + 1
    return Framing(index)


def _walk_gzip(raw, max_record_bytes: int) -> Framing:
    index = 0
    try:
        with gzip.GzipFile(fileobj=raw) as stream:
            while True:
                try:
                    header = stream.read(HEADER_BYTES)
                except gzip.BadGzipFile:
                    if index:  # bytes after the last member that start no member: both readers stop there
                        break
                    raise
                if not header:
                    break
                if len(header) < HEADER_BYTES:
                    return Framing(index, _stray(len(header), "data"))
                problem = _header_problem(header, max_record_bytes)
                if problem:
                    return Framing(index, problem)
                length = int.from_bytes(header[:8], "little")
                left = length + FOOTER_BYTES
                while left and (piece := stream.read(min(left, _PIECE_BYTES))):
                    left -= len(piece)
                if left:
                    return Framing(index, _unreadable(f"its header claims {length:,} bytes, past the end of the "
                                                      "data"))
                index += 1
    except (OSError, EOFError, zlib.error) as error:  # not gzip, cut short, a damaged deflate stream
        return Framing(index, _unreadable(f"the gzip data cannot be read: {first_line(error)}"))
    return Framing(index)
