"""A TFRecord file's framing walked from its headers (ingest.framing) agrees with the readers on what they read
whole, and stops early, in bounded memory, on what they would not."""

import gzip
import struct
import zlib

import pytest
import tensorflow as tf

from ingest import framing
from traffic.tfrecord import tfrecord_bytes

LIMIT = 1 << 20
RECORDS = [bytes([i]) * (i * 7) for i in range(40)]  # lengths 0 to 273: a header often spans a gzip piece's edge


def _walk(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return framing.walk(str(path), LIMIT)


@pytest.mark.parametrize("name, data", [
    ("whole.tfrecord", tfrecord_bytes(RECORDS)),
    ("empty.tfrecord", b""),
    ("whole.gz", gzip.compress(tfrecord_bytes(RECORDS))),
    ("members.gz", gzip.compress(tfrecord_bytes(RECORDS[:5])) + gzip.compress(tfrecord_bytes(RECORDS[5:]))),
    ("nothing.gz", gzip.compress(b"")),
    ("NAMED.GZ", gzip.compress(tfrecord_bytes(RECORDS))),  # Beam's reader chooses by the suffix in any case
    ("trailing.gz", gzip.compress(tfrecord_bytes(RECORDS)) + b"x"),  # both readers stop at bytes that start no member
])
def test_a_file_the_readers_read_whole_is_walked_whole_and_counted_as_tensorflow_counts_it(tmp_path, name, data):
    walked = _walk(tmp_path, name, data)
    assert walked.problem is None
    read = list(tf.data.TFRecordDataset(str(tmp_path / name), compression_type=framing.compression(name)))
    assert walked.records == len(read) == (0 if "empty" in name or "nothing" in name else len(RECORDS))


def test_a_header_past_the_end_or_above_the_limit_or_with_a_bad_checksum_stops_the_walk_at_that_record(tmp_path):
    whole = tfrecord_bytes(RECORDS[:3])
    claim = struct.pack("<Q", 10**12)
    fits = tfrecord_bytes([b"x" * (LIMIT + 1)])
    cases = {"huge": whole + fits, "short": whole[:-1], "stray": whole + b"\0" * 11,
             "checksum": whole + claim + b"\0" * 20}
    for name, data in cases.items():
        for compressed in (False, True):
            walked = _walk(tmp_path, name + (".gz" if compressed else ""), gzip.compress(data) if compressed else data)
            assert (walked.records, name) == (3 if name != "short" else 2, name), walked
            assert walked.problem, name
    assert "above the limit of 1,048,576" in _walk(tmp_path, "h", whole + fits).problem
    assert "its length's checksum does not match" in _walk(tmp_path, "c", whole + claim + b"\0" * 20).problem
    assert "11 stray bytes at the end of the file" in _walk(tmp_path, "s", whole + b"\0" * 11).problem


def test_a_gzip_bomb_of_zeros_is_refused_at_its_first_header_without_reading_it_all(tmp_path):
    """Zeros compress a thousandfold: a header of zeros (length 0) fails its checksum, so the walk stops at the
    first, where a walk without the check decompressed the whole (a gigabyte: a minute)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    data = b"".join(compressor.compress(b"\0" * (1 << 20)) for _ in range(64)) + compressor.flush()
    walked = _walk(tmp_path, "bomb.gz", data)
    assert walked.records == 0 and "checksum does not match" in walked.problem


def test_other_compressions_are_named_by_suffix_in_any_case():
    assert [framing.other_compression(name) for name in ("a.BZ2", "a.zst", "a.tfrecord", "a.gz", "a.XZ")] == \
        [".bz2", ".zst", None, None, ".xz"]
