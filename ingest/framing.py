"""A TFRecord file's framing, read from its records' headers alone before TensorFlow reads the file.

TensorFlow's reader allocates whatever length a record's header claims before
it reads the data (a 15-byte file claiming a terabyte kills the process), takes
fewer than 12 stray bytes at the end for the end of the file, and stops at an
empty gzip member; Beam's reader (ImportExampleGen's) fails on the first two
without naming the file and reads on past the third. So a span written by
another tool has its files walked here first: a plain file by seeking from
header to header, a gzip file by decompressing it in pieces as Beam's reader
does (memory stays bounded), each header's length checked against its
checksum, a limit and what the file holds. The walk counts the records as Beam
will read them.
"""

from __future__ import annotations

import dataclasses
import zlib

import tensorflow as tf

from contract.errors import first_line
from traffic.tfrecord import FOOTER_BYTES, HEADER_BYTES, masked_crc

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


class _AsBeamReadsGzip:
    """A gzip file's data as Beam's reader (ImportExampleGen's: apache_beam.io.filesystem.CompressedFile) gets it:
    member after member, a new decompressor for what one member leaves unused (so bytes after a member that start
    none are an error, as there), until the file ends (a last member cut short after its data is no error, as
    there); zlib's errors as they come. Decompressed in bounded pieces, so a bomb costs time, not memory."""

    def __init__(self, raw):
        self._raw, self._decompressor = raw, zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._buffer, self._ended = bytearray(), False

    def _fill(self) -> bool:
        """Decompresses one more piece into the buffer; False once the file has ended."""
        while not self._ended:
            if self._decompressor.unconsumed_tail:
                data = self._decompressor.unconsumed_tail
            elif self._decompressor.unused_data:
                data, self._decompressor = self._decompressor.unused_data, zlib.decompressobj(zlib.MAX_WBITS | 16)
            else:
                data = self._raw.read(1 << 20)
            if not data:
                self._ended = True
                break
            piece = self._decompressor.decompress(data, _PIECE_BYTES)
            if piece:
                self._buffer += piece
                return True
        return False

    def read(self, count: int) -> bytes:
        while len(self._buffer) < count and self._fill():
            pass
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def skip(self, count: int) -> int:
        """Skips up to `count` bytes; returns how many it skipped."""
        skipped = 0
        while skipped < count and (self._buffer or self._fill()):
            step = min(count - skipped, len(self._buffer))
            del self._buffer[:step]
            skipped += step
        return skipped


def _walk_gzip(raw, max_record_bytes: int) -> Framing:
    stream, index = _AsBeamReadsGzip(raw), 0
    try:
        while header := stream.read(HEADER_BYTES):
            if len(header) < HEADER_BYTES:
                return Framing(index, _stray(len(header), "data"))
            problem = _header_problem(header, max_record_bytes)
            if problem:
                return Framing(index, problem)
            length = int.from_bytes(header[:8], "little")
            if stream.skip(length + FOOTER_BYTES) < length + FOOTER_BYTES:
                return Framing(index, _unreadable(f"its header claims {length:,} bytes, past the end of the data"))
            index += 1
    except zlib.error as error:  # not gzip, a damaged deflate stream or checksum, bytes after a member
        return Framing(index, _unreadable(f"the gzip data cannot be read: {first_line(error)}"))
    return Framing(index)
