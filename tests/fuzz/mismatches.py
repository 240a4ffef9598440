"""Images whose first header lies about what a decoder will decode: a GIF whose logical screen is smaller than
its frames, a JPEG with a second frame header (SOF), PNG and BMP headers that claim another size than their data.
Each comes with the most pixels a decoder takes on for it, known from how it was built, not by parsing it."""

from __future__ import annotations

import io
import struct
import zlib

from hypothesis import strategies as st
from PIL import Image

SIDES = st.one_of(st.integers(8, 300), st.integers(700, 1600))  # far below the fuzz targets' limits, or near them


def _gif_frame(width: int, height: int, shade: int) -> bytes:
    """A frame's image descriptor and data, as Pillow encodes a one-frame GIF of that size."""
    image = Image.new("P", (width, height), shade % 2)
    image.putpalette([0, 0, 0, 255, 255, 255] * 128)
    buffer = io.BytesIO()
    image.save(buffer, format="GIF")
    data = buffer.getvalue()
    at = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while data[at] == 0x21:  # extensions before the descriptor: label, then sub-blocks
        at += 2
        while data[at]:
            at += 1 + data[at]
        at += 1
    return data[at:-1]  # the descriptor and its data, without the trailer


def gif(screen: tuple[int, int], frames: list[tuple[int, int]]) -> tuple[bytes, int]:
    header = b"GIF89a" + struct.pack("<HHBBB", *screen, 0xF0, 0, 0) + bytes([0, 0, 0, 255, 255, 255])
    body = b"".join(_gif_frame(w, h, n) for n, (w, h) in enumerate(frames))
    canvas = max(w for w, _ in frames) * max(h for _, h in frames)
    return header + body + b"\x3b", max(screen[0] * screen[1], canvas, sum(w * h for w, h in frames))


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(buffer, format="JPEG", quality=50)
    return buffer.getvalue()


def jpeg_second_sof(size: tuple[int, int], claimed: tuple[int, int], where: str) -> tuple[bytes, int]:
    """A JPEG of `size` with a copy of its SOF claiming `claimed` (width, height) before, after its own, or after
    the scan."""
    data = _jpeg(*size)
    at = 2
    while data[at + 1] != 0xC0:  # segment by segment to the frame header
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    own = data[at:at + 2 + int.from_bytes(data[at + 2:at + 4], "big")]
    lying = own[:5] + struct.pack(">HH", claimed[1], claimed[0]) + own[9:]
    if where == "before":
        data = data[:at] + lying + data[at:]
    elif where == "after":
        data = data[:at + len(own)] + lying + data[at + len(own):]
    else:
        data = data[:-2] + lying + data[-2:]
    return data, max(size[0] * size[1], claimed[0] * claimed[1])


def png_lying_ihdr(size: tuple[int, int], claimed: tuple[int, int]) -> tuple[bytes, int]:
    """A PNG of `size` whose IHDR (its CRC made right) claims `claimed`: the decoder allocates what IHDR says."""
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    data = buffer.getvalue()
    fields = struct.pack(">II", *claimed) + data[24:29]
    chunk = b"IHDR" + fields
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:], \
        claimed[0] * claimed[1]


def bmp_lying_header(size: tuple[int, int], claimed: tuple[int, int], top_down: bool) -> tuple[bytes, int]:
    """A BMP of `size` whose header claims `claimed`, its height negative (rows top-down) if asked."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="BMP")
    data = buffer.getvalue()
    height = -claimed[1] if top_down else claimed[1]
    return data[:18] + struct.pack("<ii", claimed[0], height) + data[26:], claimed[0] * claimed[1]


@st.composite
def mismatched(draw) -> tuple[bytes, int]:
    """(an image whose headers disagree, the most pixels a decoder takes on for it)."""
    side = lambda: draw(SIDES)  # noqa: E731
    kind = draw(st.sampled_from(["gif", "jpeg", "png", "bmp"]))
    if kind == "gif":
        frames = [(side(), side()) for _ in range(draw(st.integers(1, 3)))]
        return gif((draw(st.integers(1, 64)), draw(st.integers(1, 64))), frames)
    small = (draw(st.integers(8, 48)), draw(st.integers(8, 48)))
    claimed = (side() * draw(st.sampled_from([1, 4])), side())
    if kind == "jpeg":
        return jpeg_second_sof(small, claimed, draw(st.sampled_from(["before", "after", "after the scan"])))
    if kind == "png":
        return png_lying_ihdr(small, claimed)
    return bmp_lying_header(small, claimed, draw(st.booleans()))
