"""Checking one image file: accepted as is, normalized to RGB JPEG, or rejected.

Pure functions of the file's bytes, so tests and any runner (a loop, Beam)
can call them directly. TensorFlow's decoder has the last word, because
Transform decodes with it: an image that PIL opens but TensorFlow cannot
would otherwise crash the pipeline later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import re
import sys
import tempfile
import threading
import typing
import warnings
from typing import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps, UnidentifiedImageError

from config import JPEG_DECODER_MAX_PIXELS, DataConfig
from contract.errors import first_line
from ingest.image_headers import header_claims

# Pillow's own guard against decompression bombs; ingest applies its own limit.
Image.MAX_IMAGE_PIXELS = None
# The formats the README lists; Pillow opens only these. Others (EPS, which Pillow renders by starting
# Ghostscript; PDF, PSD, ...) are rejected by name before any of their code runs.
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
MIN_SIDE = 8
JPEG_QUALITY = 95
# The most JPEG bytes one decoding call takes (it copies them into a tensor): a converted image's JPEG can be far
# larger than its file.
_DECODE_BYTES = 32 << 20
# The check decodes at an eighth of each side (libjpeg's DCT scaling): libjpeg still reads every coefficient of the
# entropy-coded data at any scale, as it must to find the next one, so a scaled decode fails wherever a full one
# does (tests/ingest/test_image_formats.py damages JPEGs hundreds of ways and compares); only the inverse DCT,
# upsampling and colour conversion shrink. About half the time of a full decode of a 200-500 px photo.
CHECK_RATIO = 8


class RejectedImage(ValueError):
    """The bytes are not a usable image; `reason` says why, for the report. Internal: the caller lists the file
    with its reason and goes on; it never ends a command."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class CheckedImage:
    jpeg: bytes
    height: int
    width: int
    normalized: str | None  # what was converted, or None when accepted as is
    sha256: str


_captured_stderr: dict[int, typing.IO[bytes]] = {}  # a file per process: a forked worker writes to its own
# File descriptor 2 is the process's, not a thread's: two threads swapping it at once could leave it pointing at a
# capture file for good.
_stderr_swap = threading.Lock()


@contextlib.contextmanager
def _stderr_captured():
    """What C code writes to this process's stderr meanwhile (file descriptor 2), as a list that holds its text
    once the block ends: libjpeg, inside TensorFlow's decoder, prints its warnings and errors there itself, which
    would put bare lines among a command's output."""
    text: list[str] = []
    with _stderr_swap:
        capture = _captured_stderr.get(os.getpid())
        if capture is None:
            capture = _captured_stderr[os.getpid()] = tempfile.TemporaryFile()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (closed by the caller): nothing to keep clean
            yield text
            text.append("")
            return
        capture.seek(0)
        capture.truncate()
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text.append(capture.read(4096).decode("utf-8", "replace"))


# TensorFlow's own log lines, which reach the same stderr when TF_CPP_MIN_LOG_LEVEL lets them ("2026-11-26
# 11:35:58.981965: W tensorflow/core/framework/local_rendezvous.cc:404] ..."): not libjpeg's reason.
_TF_LOG_LINE = re.compile(r"\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?: [IWEF] \S+:\d+\] ")


def _tf_decodes(jpeg: bytes, opened: Image.Image | None) -> None:
    """TensorFlow's decoder has the last word; a JPEG it cannot decode is rejected with the clearest reason at
    hand: Pillow's, when Pillow fails on it too (it says "truncated"), else libjpeg's own line. `opened`: Pillow's
    image of a JPEG stored as it came, opened but not decoded (None for a JPEG Pillow wrote itself)."""
    try:
        with _stderr_captured() as libjpeg:
            tf.io.decode_jpeg(jpeg, channels=3, ratio=CHECK_RATIO)
    except tf.errors.OpError as error:  # InvalidArgumentError for damaged data; any other is as much a refusal
        try:
            if opened is not None:
                opened.load()  # only for its reason: a JPEG stored as it came was not decoded by Pillow
        except (OSError, SyntaxError, ValueError) as pillow:
            raise RejectedImage(f"truncated or corrupt image data ({pillow})") from None
        raise RejectedImage(f"corrupt JPEG data ({_last_said(libjpeg[0]) or first_line(error)})") from None


def _last_said(captured: str) -> str | None:
    """libjpeg's last line in what stderr got meanwhile (TensorFlow's own log lines left out), if any."""
    said = [line.strip() for line in captured.splitlines() if line.strip() and not _TF_LOG_LINE.match(line)]
    return said[-1] if said else None


def _format_named_by_header(data: bytes) -> str | None:
    """The format Pillow would take `data` for, read from its first bytes by each plugin's header test alone
    (no plugin opens it), to name a refused format; None when none claims it."""
    Image.init()
    head = data[:64]
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if name not in ACCEPTED_FORMATS and accept is not None and accept(head):
                return name
        except Exception:  # a plugin's header test that chokes on these bytes claims nothing
            continue
    return None


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """An image before TensorFlow's decoder has had its word: the JPEG bytes to keep and their size. No pixels:
    a batch holds many of these. `opened`: Pillow's image of a JPEG stored as it came, opened and not decoded
    (for the reason, should TensorFlow refuse it); None for the JPEG of a converted image."""

    jpeg: bytes
    width: int
    height: int
    normalized: str | None
    opened: Image.Image | None

    def checked(self) -> CheckedImage:
        return CheckedImage(jpeg=self.jpeg, height=self.height, width=self.width, normalized=self.normalized,
                            sha256=hashlib.sha256(self.jpeg).hexdigest())


def _grey_at_8_bits(image: Image.Image) -> Image.Image:
    """A 16-bit grey image (a PNG's) at 8 bits, as TensorFlow's PNG decoder, the served model's, reads it: its high
    byte (Pillow's convert clips every value above 255 to white), its key colour, if any, transparent."""
    grey = np.asarray(image).astype(np.int64)
    eight = Image.fromarray((grey >> 8).clip(0, 255).astype(np.uint8), "L")
    if "transparency" not in image.info:
        return eight
    opaque = np.where(grey == image.info["transparency"], 0, 255).astype(np.uint8)
    return Image.merge("LA", (eight, Image.fromarray(opaque, "L")))


def check_image(data: bytes, max_pixels: int = DataConfig.max_image_pixels) -> CheckedImage:
    """Returns the image as RGB JPEG bytes, or raises RejectedImage."""
    prepared = _prepare(data, max_pixels)
    _tf_decodes(prepared.jpeg, prepared.opened)
    return prepared.checked()


def check_images(images: Sequence[bytes], max_pixels: int = DataConfig.max_image_pixels,
                 ) -> list[CheckedImage | RejectedImage]:
    """check_image's verdict on each of `images`, in order: its CheckedImage or the RejectedImage it raises.
    TensorFlow decodes the JPEGs in calls of up to _DECODE_BYTES that run on every core (decoding is most of a
    check's cost, and one image at a time it runs on one core, each call paying eager dispatch); should any of
    them fail a call, each of that call's images is decoded on its own for its own verdict."""
    outcomes: list[_Prepared | RejectedImage] = []
    for data in images:
        try:
            outcomes.append(_prepare(data, max_pixels))
        except RejectedImage as rejection:
            outcomes.append(rejection)
    to_decode = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, _Prepared)]
    for call in _by_bytes(to_decode, [len(outcomes[i].jpeg) for i in to_decode], _DECODE_BYTES):
        if len(call) > 1 and _all_decode([outcomes[i].jpeg for i in call]):
            continue
        for i in call:
            try:
                _tf_decodes(outcomes[i].jpeg, outcomes[i].opened)
            except RejectedImage as rejection:
                outcomes[i] = rejection
    return [outcome.checked() if isinstance(outcome, _Prepared) else outcome for outcome in outcomes]


def _by_bytes(indices: list[int], sizes: list[int], limit: int) -> list[list[int]]:
    """`indices` in runs whose sizes add up to `limit`, a run closed by the one that reaches it."""
    runs, run, total = [], [], 0
    for index, size in zip(indices, sizes, strict=True):
        run.append(index)
        total += size
        if total >= limit:
            runs.append(run)
            run, total = [], 0
    return runs + [run] if run else runs


@functools.cache
def _batch_decoder():
    """A graph that decodes a batch of JPEGs as the check does (tf.io.decode_jpeg, 3 channels, CHECK_RATIO), as
    many at once as there are cores; traced once per process. Only the decoded shapes come out: what matters is that
    it decodes."""
    parallel = os.cpu_count() or 1

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decode_all(jpegs):
        return tf.map_fn(lambda jpeg: tf.shape(tf.io.decode_jpeg(jpeg, channels=3, ratio=CHECK_RATIO)), jpegs,
                         parallel_iterations=parallel, fn_output_signature=tf.TensorSpec([3], tf.int32))

    return decode_all


def _all_decode(jpegs: list[bytes]) -> bool:
    """Whether TensorFlow's decoder takes every one of `jpegs` (libjpeg's lines kept off stderr meanwhile)."""
    try:
        with _stderr_captured():
            _batch_decoder()(tf.constant(jpegs, dtype=tf.string))
    except tf.errors.OpError:
        return False
    return True


def _prepare(data: bytes, max_pixels: int) -> _Prepared:
    """Every check but TensorFlow's decode: the bytes to keep (the JPEG as it came, or Pillow's conversion to an
    RGB JPEG), or RejectedImage."""
    if not data:
        raise RejectedImage("empty file")
    for claim in header_claims(data):  # before any decoder sees the bytes: Pillow sizes a file by one header only
        if claim.pixels > max_pixels:
            raise RejectedImage(f"{claim.what} exceeds the limit of {max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise RejectedImage(f"{width}x{height} pixels exceeds the limit of {max_pixels}")
            if width * height > JPEG_DECODER_MAX_PIXELS:  # the check's scaled decode would not find that out
                raise RejectedImage(f"{width}x{height} pixels is more than TensorFlow's JPEG decoder takes "
                                    f"({JPEG_DECODER_MAX_PIXELS:,})")
            if min(width, height) < MIN_SIDE:
                raise RejectedImage(f"{width}x{height} is smaller than {MIN_SIDE} pixels on a side")
            source_format = image.format
            orientation = image.getexif().get(0x0112, 1)
            # A JPEG that needs no change is stored as it came, and TensorFlow's decode below has the last word
            # on its pixels: decoding it with Pillow too would double ingest's main cost for nothing.
            as_is = source_format == "JPEG" and image.mode == "RGB" and orientation in (1, None)
            if not as_is:
                image.load()
    except RejectedImage:
        raise
    except UnidentifiedImageError:
        raise RejectedImage(f"not an image ({_format_named_by_header(data) or 'unrecognized format'})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise RejectedImage(f"truncated or corrupt image data ({error})") from None

    changes = []
    if source_format != "JPEG":
        changes.append(f"{source_format} to JPEG")
    if orientation not in (1, None):
        image = ImageOps.exif_transpose(image)
        changes.append(f"EXIF orientation {orientation} applied")
    if image.mode != "RGB" or "transparency" in image.info:
        changes.append(f"{image.mode} to RGB" if image.mode != "RGB" else "its key colour onto white")
        if image.mode.startswith("I;16") or image.mode == "I":
            image = _grey_at_8_bits(image)
        # a key colour (tRNS) in an RGB, grey or palette image is transparent too, as TensorFlow's decoder reads it
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            image = background
        else:
            image = image.convert("RGB")

    if changes:
        out = io.BytesIO()
        try:
            with _stderr_captured() as libjpeg:  # which prints why it refuses, and Pillow says only that it did
                image.save(out, format="JPEG", quality=JPEG_QUALITY)
        except OSError as error:  # libjpeg takes at most 65,500 pixels a side: a wider PNG cannot become a JPEG
            raise RejectedImage(f"cannot be converted to JPEG ({_last_said(libjpeg[0]) or error})") from None
        jpeg = out.getvalue()
    else:
        jpeg = data
    width, height = image.size
    return _Prepared(jpeg, width, height, "; ".join(changes) or None, None if changes else image)
