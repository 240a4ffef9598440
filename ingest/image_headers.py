"""The pixels an encoded image's headers say a decoder will decode, read from the bytes alone.

A file's first header is not the whole story: a GIF's logical screen says
nothing of its frames, each of which giflib (TensorFlow's GIF decoder) decodes
at the size of its own image descriptor, every frame, before the first is
taken; a JPEG may carry several SOF markers, Pillow sizing the image by one and
libjpeg by another. So every size a decoder may allocate for is listed here,
and the pixel limit is held against each (ingest.images).
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Claim(NamedTuple):
    """One size a header gives: `size` ("9000x9000 pixels"), and `where` when an image gives several."""

    size: str
    pixels: int
    where: str | None = None

    @property
    def what(self) -> str:
        """For a reason: "9000x9000 pixels (GIF frame 2)"."""
        return f"{self.size} ({self.where})" if self.where else self.size


def _sized(width: int, height: int, where: str) -> Claim:
    return Claim(f"{width}x{height} pixels", width * height, where)


# A marker in a JPEG's entropy-coded data: the 0xFF (after any fill bytes) that anything but a stuffed zero or RSTn
# follows. Matched from the 0xFF alone, the lookahead after it: a pattern that starts with a plain byte is searched
# for as one, where `\xff+` made the search try every position of the data (60 us for 10 KB against 1).
_JPEG_NEXT_MARKER = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xDA)}  # TEM, RSTn, SOI, EOI: no length follows
_JPEG_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC share the range
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9


def _be16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "big")


def _le16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "little")


def _jpeg_claims(data: bytes) -> list[Claim]:
    """Every SOF segment's size, up to EOI, found the way libjpeg walks: segment by segment, and through
    entropy-coded data (after SOS) to the next marker. Sizes inside other segments (an EXIF thumbnail) are
    skipped with their segment: no decoder reads them."""
    claims, at, count = [], 2, 0
    while at + 4 <= len(data):
        if data[at] != 0xFF or data[at + 1] == 0xFF:  # garbage or fill bytes: on to the next marker
            found = _JPEG_NEXT_MARKER.search(data, at)
            if found is None:
                break
            at = found.start()
        marker = data[at + 1]
        if marker == _JPEG_EOI:
            break
        if marker in _JPEG_STANDALONE:
            at += 2
            continue
        if marker in _JPEG_SOF and at + 9 <= len(data):
            count += 1
            height, width = _be16(data, at + 5), _be16(data, at + 7)
            claims.append(_sized(width, height, f"JPEG frame header {count}"))
        at += 2 + _be16(data, at + 2)
        if marker == _JPEG_SOS:
            found = _JPEG_NEXT_MARKER.search(data, at)
            if found is None:
                break
            at = found.start()
    return claims


def _gif_skip_sub_blocks(data: bytes, at: int) -> int:
    while at < len(data):
        size = data[at]
        at += 1 + size
        if size == 0:
            break
    return at


def _color_table_bytes(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def gif_frames(data: bytes) -> list[tuple[int, int]]:
    """(width, height) of every image descriptor of a GIF, in order, as giflib reads them."""
    frames = []
    at = 13 + _color_table_bytes(data[10]) if len(data) > 10 else len(data)
    while at < len(data):
        block = data[at]
        if block == 0x21:  # extension: its label, then sub-blocks
            at = _gif_skip_sub_blocks(data, at + 2)
        elif block == 0x2C and at + 10 <= len(data):  # image descriptor: left, top, width, height, flags
            frames.append((_le16(data, at + 5), _le16(data, at + 7)))
            at = _gif_skip_sub_blocks(data, at + 10 + _color_table_bytes(data[at + 9]) + 1)
        else:  # the trailer, or a record giflib refuses
            break
    return frames


def _gif_claims(data: bytes) -> list[Claim]:
    """The logical screen, each frame, the canvas TensorFlow allocates (the widest frame's width by the tallest
    one's height) and all frames together: giflib decodes every frame, whatever frame the caller keeps."""
    width, height = _le16(data, 6), _le16(data, 8)
    claims = [_sized(width, height, "GIF logical screen")]
    frames = gif_frames(data)
    claims += [_sized(w, h, f"GIF frame {n}") for n, (w, h) in enumerate(frames, 1)]
    if len(frames) > 1:
        claims.append(_sized(max(w for w, _ in frames), max(h for _, h in frames), "GIF frames' canvas"))
        total = sum(w * h for w, h in frames)
        claims.append(Claim(f"{total} pixels in {len(frames)} GIF frames", total))
    return claims


def _bmp_claims(data: bytes) -> list[Claim]:
    """The size Pillow decodes: 16-bit in an OS/2 (12-byte) header, else 32-bit, a negative height meaning
    top-down rows."""
    if int.from_bytes(data[14:18], "little") == 12:
        width, height = _le16(data, 18), _le16(data, 20)
    else:
        width = abs(int.from_bytes(data[18:22], "little", signed=True))
        height = abs(int.from_bytes(data[22:26], "little", signed=True))
    return [_sized(width, height, "BMP header")]


def _png_claims(data: bytes) -> list[Claim]:
    if data[12:16] != b"IHDR":
        return []
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return [_sized(width, height, "PNG header")]


def header_claims(data: bytes) -> list[Claim]:
    """Every size the headers of `data` give (JPEG, GIF, PNG, BMP; [] for other data or too short a header); one
    size, named by itself alone, when they all agree."""
    claims = _claims(data)
    if len({claim.size for claim in claims}) == 1:
        return [claims[0]._replace(where=None)]
    return claims


def _claims(data: bytes) -> list[Claim]:
    if data.startswith(b"\xff\xd8"):
        return _jpeg_claims(data)
    if data.startswith(b"GIF") and len(data) >= 13:
        return _gif_claims(data)
    if data.startswith(b"\x89PNG") and len(data) >= 24:
        return _png_claims(data)
    if data.startswith(b"BM") and len(data) >= 26:
        return _bmp_claims(data)
    return []
