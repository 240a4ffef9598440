"""Only the formats the README lists are opened; any other is rejected by name before its decoder runs."""

import functools
import io
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from config import JPEG_DECODER_MAX_PIXELS, ConfigError, DataConfig
from ingest import images
from ingest.images import ACCEPTED_FORMATS, RejectedImage, check_image, check_images
from tests.helpers import ROOT

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
       b"newpath 0 0 moveto 100 100 lineto stroke\nshowpage\n%%EOF\n")


def test_an_eps_file_named_jpg_is_rejected_by_name_and_ghostscript_never_starts(tmp_path):
    """Pillow renders EPS by starting Ghostscript; here `gs` is a sentinel that records any call."""
    bin_dir, called = tmp_path / "bin", tmp_path / "gs-called"
    bin_dir.mkdir()
    for name in ("gs", "gswin32c", "gswin64c"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "$@" >> {called}\nexit 1\n')
        (bin_dir / name).chmod(0o755)
    (tmp_path / "cat.jpg").write_bytes(EPS)
    script = ("import pathlib, sys\n"
              "from ingest.images import RejectedImage, check_image\n"
              "try:\n"
              f"    check_image(pathlib.Path({str(tmp_path / 'cat.jpg')!r}).read_bytes())\n"
              "except RejectedImage as rejection:\n"
              "    print(rejection.reason)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "not an image (EPS)"
    assert not called.exists(), f"Ghostscript was started: {called.read_text()}"


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 20), (200, 120, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PCX", "TGA", "SGI", "PPM", "IM", "DDS"])
def test_formats_pillow_knows_but_the_readme_does_not_list_are_rejected_by_name(fmt):
    with pytest.raises(RejectedImage) as rejected:
        check_image(_encoded(fmt))
    assert rejected.value.reason.startswith("not an image ("), rejected.value.reason
    if fmt not in ("TGA", "IM"):  # neither has a header test of its own: opening is how Pillow knows them
        assert rejected.value.reason == f"not an image ({fmt})"


@pytest.mark.parametrize("fmt", [f for f in ACCEPTED_FORMATS if f != "JPEG"])
def test_the_listed_formats_are_normalized_to_jpeg(fmt):
    assert check_image(_encoded(fmt)).normalized.startswith(f"{fmt} to JPEG")


def test_a_16_bit_grey_png_keeps_its_tones_as_tensorflows_decoder_reads_them():
    # Pillow's convert to RGB clips every 16-bit value above 255: the image came out all but white
    ramp = np.tile(np.linspace(0, 65535, 96), (64, 1)).astype(np.uint16)
    data = io.BytesIO()
    Image.fromarray(ramp).save(data, "PNG")
    checked = check_image(data.getvalue())
    stored = tf.io.decode_jpeg(checked.jpeg).numpy().astype(int)
    served = tf.io.decode_png(data.getvalue(), channels=3).numpy().astype(int)
    assert stored.shape == served.shape and served.max() == 255 and served.min() == 0
    assert np.abs(stored - served).max() <= 8, "the JPEG's rounding, not another tone"
    assert checked.normalized.startswith("PNG to JPEG")


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
def test_a_key_colour_is_transparent_and_stored_on_white_as_the_served_model_reads_it(mode):
    pixels = np.full((32, 48), 40, np.uint16 if mode == "I;16" else np.uint8)
    pixels[:16] = 0  # the top half in the key colour
    image = Image.fromarray(np.stack([pixels] * 3, -1) if mode == "RGB" else pixels)
    assert image.mode == mode
    data = io.BytesIO()
    image.save(data, "PNG", transparency=(0, 0, 0) if mode == "RGB" else 0)
    stored = tf.io.decode_jpeg(check_image(data.getvalue()).jpeg).numpy().astype(int)
    from trainer import preprocessing

    served = tf.io.decode_png(preprocessing.on_white(tf.constant(data.getvalue())), channels=3).numpy().astype(int)
    assert stored[:14].min() >= 250 and served[:16].min() == 255, "the key colour's pixels on white"
    assert np.abs(stored - served).max() <= 8, "the JPEG's rounding, not another image"


def _two_sofs(jpeg):
    at = jpeg.index(b"\xff\xc0")
    return jpeg[:at] + jpeg[at:at + 2 + int.from_bytes(jpeg[at + 2:at + 4], "big")] + jpeg[at:]


TRUNCATED = "truncated or corrupt image data (image file is truncated"


# Without its end marker, Pillow still decodes a JPEG whose last rows it had all the data for (about one in 25 of
# these noise images): the reason is then libjpeg's own line, which TensorFlow's decoder printed.
@pytest.mark.parametrize("damage, reasons", [
    (lambda jpeg: jpeg[:len(jpeg) // 2], (TRUNCATED,)),
    (lambda jpeg: jpeg[:-2], (TRUNCATED, "corrupt JPEG data (Input file read error)")),
    (_two_sofs, ("truncated or corrupt image data (broken data stream",)),
])
@pytest.mark.parametrize("seed", range(3))
def test_a_damaged_jpeg_is_rejected_by_the_decoder_that_has_the_last_word_with_a_plain_reason_and_no_stray_output(
        damage, reasons, seed, capfd):
    """A JPEG stored as it came is decoded once, by TensorFlow (Transform's decoder), not by Pillow first. A damaged
    copy is still rejected, with Pillow's reason or libjpeg's (TensorFlow's says "Invalid JPEG data or crop window"
    for all of them), and libjpeg's own lines, which it prints to the process's stderr, do not reach the command's
    output."""
    noise = np.random.default_rng(seed).normal(128, 60, (240, 320)).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).convert("RGB").save(out, format="JPEG")
    whole = out.getvalue()
    assert check_image(whole).normalized is None and check_image(whole).jpeg == whole  # stored as it came
    capfd.readouterr()
    with pytest.raises(RejectedImage) as rejected:
        check_image(damage(whole))
    assert rejected.value.reason.startswith(reasons) and "\n" not in rejected.value.reason, rejected.value.reason
    assert capfd.readouterr() == ("", "")


def test_checks_from_several_threads_at_once_leave_stderr_where_it_was(capfd):
    """The decoder's messages are kept off stderr by pointing file descriptor 2 elsewhere while it runs: a
    process-wide swap, so threads take turns, and stderr is where it was once they are done."""
    import concurrent.futures

    out = io.BytesIO()
    Image.effect_noise((64, 48), 60).convert("RGB").save(out, format="JPEG")
    whole = out.getvalue()
    damaged = [whole, whole[:len(whole) // 2], _two_sofs(whole)] * 20
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(_outcome, damaged))
    assert outcomes == [_outcome(data) for data in damaged]
    os.write(2, b"still stderr\n")
    assert capfd.readouterr().err == "still stderr\n"


def _outcome(data):
    try:
        return check_image(data).sha256
    except RejectedImage as rejection:
        return rejection.reason


def _verdict(outcome):
    return outcome.reason if isinstance(outcome, RejectedImage) else outcome


def test_a_batch_gets_each_image_s_own_verdict_in_order_with_or_without_a_damaged_image_among_them(capfd):
    """check_images decodes a batch in one TensorFlow call; one damaged JPEG among them fails that call, and then
    each is decoded on its own: either way every image gets what check_image gives it, and libjpeg's lines stay off
    stderr."""
    wholes = []
    for seed in range(4):
        out = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (60 + seed, 80, 3), dtype=np.uint8)).save(
            out, format="JPEG")
        wholes.append(out.getvalue())
    good = [wholes[0], _encoded("PNG"), wholes[1], _encoded("TIFF"), b"", wholes[2]]
    damaged = [*good, wholes[3][:len(wholes[3]) // 2], _two_sofs(wholes[0]), wholes[1][:-2]]
    capfd.readouterr()
    for batch in (good, damaged, damaged[::-1], [wholes[3]], []):
        singly = []
        for data in batch:
            try:
                singly.append(check_image(data))
            except RejectedImage as rejection:
                singly.append(rejection)
        assert [_verdict(v) for v in check_images(batch)] == [_verdict(v) for v in singly]
    assert sum(isinstance(v, RejectedImage) for v in check_images(damaged)) == 5  # empty, TIFF and the 3 damaged
    assert capfd.readouterr() == ("", "")


def test_the_batch_decode_fails_on_any_damaged_jpeg_and_passes_whole_ones():
    """What lets a batch's verdict stand for each of its images: the one call decodes every image (a graph could
    have left out decodes whose pixels nothing uses)."""
    out = io.BytesIO()
    Image.effect_noise((96, 64), 60).convert("RGB").save(out, format="JPEG")
    whole = out.getvalue()
    assert images._all_decode([whole] * 5)
    for damage in (lambda jpeg: jpeg[:len(jpeg) // 2], _two_sofs):
        for at in range(5):
            batch = [whole] * 5
            batch[at] = damage(whole)
            assert not images._all_decode(batch), at


def test_tensorflow_s_own_log_lines_are_not_taken_for_libjpeg_s_reason(tmp_path):
    """With TF_CPP_MIN_LOG_LEVEL below 3 in the user's environment, TensorFlow logs to the same stderr as libjpeg
    ("... W tensorflow/core/framework/local_rendezvous.cc:404] Local rendezvous is aborting ..."): a reason that
    took that line would hold a timestamp, and two runs' reports would differ."""
    damaged = []
    for seed in range(8):
        noise = np.random.default_rng(seed).normal(128, 60, (240, 320)).clip(0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(noise).convert("RGB").save(out, format="JPEG")
        damaged += [out.getvalue()[:-2], _two_sofs(out.getvalue())]
    for i, data in enumerate(damaged):
        (tmp_path / f"{i}.jpg").write_bytes(data)
    script = ("import pathlib, sys\n"
              "from ingest.images import RejectedImage, check_image\n"
              f"for i in range({len(damaged)}):\n"
              "    try:\n"
              f"        check_image(pathlib.Path({str(tmp_path)!r}, f'{{i}}.jpg').read_bytes())\n"
              "    except RejectedImage as rejection:\n"
              "        print(rejection.reason)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 0, result.stderr[-2000:]
    reasons = result.stdout.splitlines()
    assert reasons == [_outcome(data) for data in damaged]
    assert any(reason.startswith("corrupt JPEG data (") for reason in reasons)  # libjpeg's own line was taken


def _damaged_copies(jpeg: bytes, rng) -> list[bytes]:
    """`jpeg` cut short, with bytes changed, with junk put in, with a stretch cut out: at random places."""
    size = len(jpeg)
    copies = [jpeg[:rng.integers(2, size)] for _ in range(12)]
    for _ in range(24):
        changed = bytearray(jpeg)
        for at in rng.integers(2, size, rng.choice([1, 2, 5])):
            changed[at] = rng.integers(256)
        copies.append(bytes(changed))
    for _ in range(8):
        at = rng.integers(2, size)
        copies.append(jpeg[:at] + rng.integers(0, 256, rng.integers(1, 40), dtype=np.uint8).tobytes() + jpeg[at:])
        copies.append(jpeg[:at] + jpeg[min(size, at + rng.integers(1, 200)):])
    return copies


def _decodes(decode, data) -> bool:
    try:
        decode(data)
    except tf.errors.OpError:
        return False
    return True


def test_the_check_s_scaled_decode_fails_exactly_where_the_trainer_s_full_decode_fails(capfd):
    """ingest decodes at 1/CHECK_RATIO of each side, the Trainer (Transform's graph) at full size: what ingest
    accepts must decode there, and what it rejects must not. Over JPEGs of every kind ingest stores (baseline,
    progressive, optimized, each chroma subsampling, grayscale, CMYK) damaged hundreds of ways, the two agree."""
    rng = np.random.default_rng(3)
    pixels = (rng.integers(0, 64, (150, 200, 3)) + np.linspace(0, 180, 200)[None, :, None]).astype(np.uint8)
    picture = Image.fromarray(pixels)
    kinds = [("RGB", {"quality": 90}), ("RGB", {"quality": 75, "progressive": True}),
             ("RGB", {"quality": 95, "subsampling": 0}), ("RGB", {"quality": 50, "subsampling": 1, "optimize": True}),
             ("L", {"quality": 80}), ("CMYK", {"quality": 80})]
    scaled = functools.partial(tf.io.decode_jpeg, channels=3, ratio=images.CHECK_RATIO)
    full = functools.partial(tf.io.decode_image, channels=3, expand_animations=False)
    compared = failed = 0
    for mode, settings in kinds:
        out = io.BytesIO()
        picture.convert(mode).save(out, format="JPEG", **settings)
        for data in [out.getvalue(), *_damaged_copies(out.getvalue(), rng)]:
            verdict = _decodes(scaled, data)
            assert verdict == _decodes(full, data), (mode, settings, len(data))
            compared, failed = compared + 1, failed + (not verdict)
    assert compared == 6 * 53 and failed > compared // 4  # the damage is real: many copies fail both
    capfd.readouterr()  # libjpeg's lines, printed by both decoders


def _flat_grey_jpeg(width: int, height: int) -> bytes:
    """A valid baseline JPEG of flat grey blocks, built by hand: one-symbol Huffman tables make each 8x8 block two
    zero bits, so even 179 million pixels are 2 MB of file."""
    def segment(marker, payload):
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    one_symbol = bytes([1] + [0] * 15) + b"\x00"
    blocks = -(-width // 8) * -(-height // 8) * 3
    return (b"\xff\xd8" + segment(0xDB, b"\x00" + b"\x01" * 64) + segment(0xC4, b"\x00" + one_symbol)
            + segment(0xC4, b"\x10" + one_symbol)
            + segment(0xC0, b"\x08" + struct.pack(">HH", height, width) + b"\x03\x01\x11\x00\x02\x11\x00\x03\x11\x00")
            + segment(0xDA, b"\x03\x01\x00\x02\x00\x03\x00\x00\x3f\x00") + bytes(-(-blocks * 2 // 8)) + b"\xff\xd9")


def test_an_image_larger_than_the_trainer_s_decoder_takes_is_rejected_and_no_limit_admits_one():
    """TensorFlow's JPEG decoder refuses 2**29 output values or more; the check's scaled decode would pass such an
    image, so the check refuses it by its size, and no --max-image-pixels may admit it."""
    jpeg = _flat_grey_jpeg(14000, 12784)  # 178,976,000 pixels
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_image(jpeg, channels=3, expand_animations=False)  # the Trainer's decode
    assert tf.io.decode_jpeg(jpeg, channels=3, ratio=images.CHECK_RATIO).shape == (1598, 1750, 3)
    with pytest.raises(RejectedImage, match=r"14000x12784 pixels is more than TensorFlow's JPEG decoder takes"):
        check_image(jpeg, max_pixels=200_000_000)
    (verdict,) = check_images([jpeg], max_pixels=200_000_000)
    assert isinstance(verdict, RejectedImage) and "decoder takes" in verdict.reason
    assert DataConfig(max_image_pixels=JPEG_DECODER_MAX_PIXELS).max_image_pixels == 178_956_970
    with pytest.raises(ConfigError, match="max_image_pixels"):
        DataConfig(max_image_pixels=JPEG_DECODER_MAX_PIXELS + 1)
