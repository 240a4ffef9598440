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
