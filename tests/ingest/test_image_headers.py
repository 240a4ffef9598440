"""The pixel limit against every size an image's headers give, before any decoder runs; and a file's size cap."""

import io
import pathlib
import re
import struct
import sys
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ingest import image_headers, sources
from ingest.image_headers import gif_frames, header_claims
from ingest.images import RejectedImage, check_image
from tests.fuzz.mismatches import bmp_lying_header, gif, jpeg_second_sof, png_lying_ihdr


def test_a_gif_claiming_16x16_with_a_larger_frame_is_rejected_by_its_frame():
    data, _ = gif((16, 16), [(1200, 1000)])
    with pytest.raises(RejectedImage, match=r"^1200x1000 pixels \(GIF frame 1\) exceeds the limit of 1000000$"):
        check_image(data, max_pixels=1_000_000)


def test_a_gif_is_held_to_its_frames_canvas_and_to_all_its_frames_together():
    tall_and_wide, _ = gif((600, 600), [(1000, 100), (100, 1000)])  # TensorFlow allocates 1000x1000
    assert gif_frames(tall_and_wide) == [(1000, 100), (100, 1000)]
    with pytest.raises(RejectedImage, match=r"1000x1000 pixels \(GIF frames' canvas\)"):
        check_image(tall_and_wide, max_pixels=500_000)
    many, _ = gif((500, 500), [(500, 500)] * 5)  # giflib decodes every frame
    with pytest.raises(RejectedImage, match="1250000 pixels in 5 GIF frames exceeds"):
        check_image(many, max_pixels=1_000_000)
    assert check_image(many, max_pixels=1_250_000).width == 500


@pytest.mark.parametrize("where", ["before", "after", "after the scan"])
def test_a_jpeg_with_a_second_larger_frame_header_is_rejected_wherever_it_sits(where):
    data, _ = jpeg_second_sof((40, 30), (2000, 1000), where)
    with pytest.raises(RejectedImage, match=r"^2000x1000 pixels \(JPEG frame header \d\) exceeds"):
        check_image(data, max_pixels=1_000_000)


def test_a_size_inside_another_segment_is_not_a_frame_header():
    """An EXIF thumbnail is a JPEG inside APP1, frame header included: no decoder reads it as the image's."""
    thumbnail, _ = jpeg_second_sof((40, 30), (2000, 1000), "after")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 100, 50)).save(buffer, format="JPEG")
    main = buffer.getvalue()
    app1 = b"Exif\0\0" + thumbnail
    data = main[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + main[2:]
    assert [claim.pixels for claim in header_claims(data)] == [64 * 48]
    assert check_image(data, max_pixels=1_000_000).width == 64


@pytest.mark.parametrize("lying", [png_lying_ihdr((40, 30), (1500, 1000)),
                                   bmp_lying_header((40, 30), (1500, 1000), top_down=True),
                                   bmp_lying_header((40, 30), (1500, 1000), top_down=False)])
def test_png_and_bmp_headers_are_held_to_the_limit(lying):
    with pytest.raises(RejectedImage, match="^1500x1000 pixels exceeds the limit of 1000000$"):
        check_image(lying[0], max_pixels=1_000_000)


def test_a_file_above_the_size_cap_is_refused_from_its_size_without_being_read(tmp_path):
    sparse = tmp_path / "huge.jpg"
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB of holes
    tracemalloc.start()
    try:
        with pytest.raises(sources.FileTooLarge, match=f"^{1 << 30} bytes, above the file size limit of 1048576 "):
            sources.read_bytes(str(sparse), max_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    small = tmp_path / "small.jpg"
    small.write_bytes(b"x" * 100)
    assert sources.read_bytes(str(small), max_bytes=100) == b"x" * 100
    with pytest.raises(sources.FileTooLarge):
        sources.read_bytes(str(small), max_bytes=99)


def test_a_file_is_read_in_what_its_size_asks_not_in_what_the_cap_allows(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(bytes(range(256)) * 400)  # 100 KB
    tracemalloc.start()
    try:
        assert sources.read_bytes(str(photo), max_bytes=1 << 30) == photo.read_bytes()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300_000, f"{peak} bytes set aside to read a 102,400-byte file under a 1 GiB cap"


def test_a_file_longer_than_its_size_said_is_read_to_its_end_or_cut_one_byte_past_the_cap():
    """A file can grow between its size and its read; /proc's files say 0 bytes and hold more."""
    whole = pathlib.Path("/proc/self/maps").read_bytes()
    assert len(whole) > 1000
    assert sources.read_bytes("/proc/self/maps")[:100] == whole[:100]
    assert len(sources.read_bytes("/proc/self/maps", max_bytes=1 << 30)) > 1000
    with pytest.raises(sources.FileTooLarge, match="^101 bytes, above the file size limit of 100 bytes "):
        sources.read_bytes("/proc/self/maps", max_bytes=100)


_MARKER_AS_WRITTEN_FIRST = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")  # what the search must keep finding


@settings(max_examples=300)
@given(st.lists(st.sampled_from([b"\xff", b"\x00", b"\xd3", b"\xd9", b"\xc0", b"a"]), max_size=40).map(b"".join),
       st.integers(0, 40))
def test_the_jpeg_marker_search_finds_the_0xff_before_the_marker_that_the_plain_pattern_finds(data, start):
    """The search starts at the 0xFF (a pattern that begins with a plain byte is searched for as one, 60x faster on
    entropy-coded data); its match is the last fill byte before the marker, where the walk goes on."""
    found, plain = image_headers._JPEG_NEXT_MARKER.search(data, start), _MARKER_AS_WRITTEN_FIRST.search(data, start)
    assert (found.start() if found else None) == (plain.end() - 2 if plain else None)


def test_a_file_above_the_cap_is_refused_without_being_opened(tmp_path):
    """By its size alone, so also a file this process may not open (another user's, behind root_squash): its
    fingerprint says "above the cap" whoever ingests it."""
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 2000)
    opened = []

    def audit(event, args):
        if event == "open" and args and str(args[0]) == str(big):
            opened.append(args)

    sys.addaudithook(audit)  # for this process's life: it only appends
    with pytest.raises(sources.FileTooLarge, match="^2000 bytes, above the file size limit of 1000 bytes "):
        sources.read_bytes(str(big), max_bytes=1000)
    assert not opened
    assert sources.read_bytes(str(big), max_bytes=2000) == b"x" * 2000 and opened, "the audit sees an open"
