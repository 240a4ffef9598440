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


def _gz(data: bytes) -> bytes:
    """gzip with no time stamp: the same bytes in every process (xdist's workers must collect the same ids)."""
    return gzip.compress(data, mtime=0)


def _beam_reads(path) -> int:
    """The records Beam's reader (ImportExampleGen's) reads from a file, its compression chosen by the suffix."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.io.tfrecordio import _TFRecordUtil

    count = 0
    with FileSystems.open(str(path)) as f:
        while _TFRecordUtil.read_record(f) is not None:
            count += 1
    return count


def _walk(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return framing.walk(str(path), LIMIT)


@pytest.mark.parametrize("name, data", [
    ("whole.tfrecord", tfrecord_bytes(RECORDS)),
    ("empty.tfrecord", b""),
    ("whole.gz", _gz(tfrecord_bytes(RECORDS))),
    ("members.gz", _gz(tfrecord_bytes(RECORDS[:5])) + _gz(tfrecord_bytes(RECORDS[5:]))),
    ("nothing.gz", _gz(b"")),
    ("NAMED.GZ", _gz(tfrecord_bytes(RECORDS))),  # Beam's reader chooses by the suffix in any case
    ("trailing.gz", _gz(tfrecord_bytes(RECORDS)) + b"x"),  # one byte starts no member for either reader
    ("no-trailer.gz", _gz(tfrecord_bytes(RECORDS))[:-8]),  # both read the data of a member cut short there
])
def test_a_file_the_readers_read_whole_is_walked_whole_and_counted_as_tensorflow_counts_it(tmp_path, name, data):
    walked = _walk(tmp_path, name, data)
    assert walked.problem is None
    read = list(tf.data.TFRecordDataset(str(tmp_path / name), compression_type=framing.compression(name)))
    assert walked.records == len(read) == _beam_reads(tmp_path / name) == \
        (0 if "empty" in name or "nothing" in name else len(RECORDS))


def test_a_header_past_the_end_or_above_the_limit_or_with_a_bad_checksum_stops_the_walk_at_that_record(tmp_path):
    whole = tfrecord_bytes(RECORDS[:3])
    claim = struct.pack("<Q", 10**12)
    fits = tfrecord_bytes([b"x" * (LIMIT + 1)])
    cases = {"huge": whole + fits, "short": whole[:-1], "stray": whole + b"\0" * 11,
             "checksum": whole + claim + b"\0" * 20}
    for name, data in cases.items():
        for compressed in (False, True):
            walked = _walk(tmp_path, name + (".gz" if compressed else ""), _gz(data) if compressed else data)
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


@pytest.mark.parametrize("damage", ["garbage after a member", "zeros after a member", "member checksum",
                                    "not gzip"])
def test_gzip_data_that_beams_reader_fails_on_is_a_problem_though_tensorflows_may_stop_before_it(tmp_path, damage):
    """Beam's reader (ImportExampleGen's) reads member after member to the end of the file; TensorFlow's stops at an
    empty member, so a fault after one passed the gate and failed ImportExampleGen."""
    whole = _gz(tfrecord_bytes(RECORDS))
    data = {"garbage after a member": whole + _gz(b"") + b"garbage!",
            "zeros after a member": whole + b"\0" * 16,
            "member checksum": whole[:-8] + bytes([whole[-8] ^ 1]) + whole[-7:],
            "not gzip": tfrecord_bytes(RECORDS)}[damage]
    walked = _walk(tmp_path, "damaged.gz", data)
    assert walked.problem and "the gzip data cannot be read" in walked.problem, walked
    with pytest.raises(Exception):  # noqa: B017 (zlib.error or Beam's own: what matters is that it fails)
        _beam_reads(tmp_path / "damaged.gz")
