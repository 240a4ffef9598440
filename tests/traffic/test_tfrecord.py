"""TFRecord framing read back: a damaged file is named in one error."""

import os

import pytest

from tests.traffic.written import make_record
from traffic import tfrecord
from traffic.records import TrafficDataError


@pytest.mark.parametrize("damage", ["cut short", "no deflate stream", "not gzip"])
def test_a_damaged_gzip_file_is_named_in_one_error_like_a_damaged_plain_file(tmp_path, damage):
    import gzip

    plain = tfrecord.tfrecord_bytes([make_record(i).serialized() for i in range(50)])
    whole = gzip.compress(plain)
    data = {"cut short": whole[:len(whole) // 2], "no deflate stream": b"\x1f\x8b" + os.urandom(100),
            "not gzip": plain}[damage]
    path = tmp_path / "part-0.gz"
    path.write_bytes(data)
    with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as stream:
        with pytest.raises(TrafficDataError, match=rf"^{path}: record \d+ cannot be read \(.+\)$"):
            list(tfrecord.read_tfrecords(stream, str(path)))


@pytest.mark.parametrize("compressed", [False, True])
def test_a_header_claiming_a_terabyte_is_a_damaged_record_not_a_terabyte_read(tmp_path, compressed):
    """A record's length, its checksum valid, claiming far more than the file holds: one read of it allocated the
    terabyte first (MemoryError, a traceback in `monitor`)."""
    import gzip
    import struct

    claim = struct.pack("<Q", 10**12)
    data = claim + tfrecord.masked_crc(claim) + b"abc"
    path = tmp_path / ("part-0.gz" if compressed else "part-0.tfrecord")
    path.write_bytes(gzip.compress(data) if compressed else data)
    with open(path, "rb") as raw, (gzip.GzipFile(fileobj=raw) if compressed else raw) as stream:
        with pytest.raises(TrafficDataError, match=rf"^{path}: record 0 is damaged \(cut short"):
            list(tfrecord.read_tfrecords(stream, str(path)))
