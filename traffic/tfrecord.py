"""TFRecord framing (tensorflow/core/lib/io/record_writer.cc): length, masked CRC-32C of the length, data, masked
CRC-32C of the data.

Written by hand rather than with tf.io.TFRecordWriter and tf.data.TFRecordDataset: a writer hands storage one
whole file's bytes to write atomically (TF's writer streams to a path), and a reader reads one record at a time
from any storage file object (a GzipFile around a GFile included) and names the damaged record, where TF's
reader fails the whole dataset with a DataLossError.
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterator

import google_crc32c

from contract import storage
from contract.errors import first_line
from traffic.records import TrafficDataError

HEADER_BYTES, FOOTER_BYTES = 12, 4  # a length (8 bytes) and its masked CRC-32C; after the data, the data's CRC
# A header's claim costs at most this much memory before the data is seen; a record up to it is read in one piece,
# held once (the sink refuses events above 16 MB by default).
_PIECE_BYTES = 64 << 20


def masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord_bytes(records: list[bytes]) -> bytes:
    parts = []
    for data in records:
        length = struct.pack("<Q", len(data))
        parts += [length, masked_crc(length), data, masked_crc(data)]
    return b"".join(parts)


def read_tfrecords(stream, where: str) -> Iterator[bytes]:
    """The records of a TFRecord file read from a binary file object, one at a time; TrafficDataError names
    `where` and the record that is damaged."""
    index = 0

    def read(count: int) -> bytes:
        try:
            return stream.read(count)
        except (EOFError, zlib.error, *storage.FAULTS) as error:  # a damaged .gz: EOFError, BadGzipFile
            why = first_line(error) or type(error).__name__
            raise TrafficDataError(f"{where}: record {index} cannot be read ({why})") from None

    def read_body(length: int) -> bytes:
        # In pieces: a header's length (its checksum valid or forged) is no promise the data is there, and one
        # read of it would allocate all it claims first (a terabyte: MemoryError).
        parts, left = [], length
        while left and (part := read(min(left, _PIECE_BYTES))):
            parts.append(part)
            left -= len(part)
        return b"".join(parts)

    while header := read(HEADER_BYTES):
        if len(header) < HEADER_BYTES or masked_crc(header[:8]) != header[8:]:
            raise TrafficDataError(f"{where}: record {index} is damaged (its length does not check)")
        (length,) = struct.unpack("<Q", header[:8])
        body = [read_body(length)]  # handed over, not kept: this frame holds no record while the reader works
        footer = read(FOOTER_BYTES)
        if len(body[0]) < length or masked_crc(body[0]) != footer:
            raise TrafficDataError(f"{where}: record {index} is damaged (cut short or its checksum does not match)")
        yield body.pop()
        index += 1
