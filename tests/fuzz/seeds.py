"""Valid inputs the mutations start from: one small image in each format users send, and variants that take
the decoders down their other paths (progressive JPEG, EXIF rotation, grayscale, palette with transparency)."""

from __future__ import annotations

import io

from PIL import Image


def _saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def image_seeds() -> list[bytes]:
    picture = Image.linear_gradient("L").resize((40, 32)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    palette = picture.convert("P")
    palette.info["transparency"] = 0
    return [
        _saved(picture, "JPEG", quality=80),
        _saved(picture, "JPEG", progressive=True),
        _saved(picture, "JPEG", exif=exif.tobytes()),
        _saved(picture.convert("L"), "PNG"),
        _saved(picture.convert("RGBA"), "PNG"),
        _saved(palette, "GIF"),
        _saved(picture, "BMP"),
        _saved(picture, "WEBP"),
    ]
