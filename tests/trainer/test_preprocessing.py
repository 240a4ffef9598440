import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, PngImagePlugin

from contract import features
from trainer import preprocessing


@pytest.mark.parametrize("size", [128, 160, 224])
def test_preprocessing_fn_gives_compact_pixels_of_the_configured_size(demo_jpegs, size):
    images = demo_jpegs["cat"] + demo_jpegs["dog"]
    inputs = {features.IMAGE_KEY: tf.constant([[b] for b in images]),
              features.LABEL_KEY: tf.constant([[0]] * 3 + [[1]] * 3, dtype=tf.int64)}
    outputs = preprocessing.preprocessing_fn(inputs, {"image_size": size})
    pixels = outputs[features.PIXELS_KEY].numpy()
    assert pixels.shape == (6, size, size, 3)
    assert outputs[features.PIXELS_KEY].dtype == tf.int64  # uint8 values; tf.Example has no uint8
    assert pixels.min() >= 0 and pixels.max() <= 255 and pixels.std() > 10
    np.testing.assert_array_equal(outputs[features.LABEL_KEY].numpy().ravel(), [0, 0, 0, 1, 1, 1])


def test_decode_matches_an_independent_resize(demo_jpegs):
    jpeg = demo_jpegs["dog"][0]
    ours = preprocessing.decode_and_resize(tf.constant([jpeg]), 96).numpy()[0].astype(float)
    reference = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB").resize((96, 96), Image.BILINEAR), float)
    assert np.abs(ours - reference).mean() < 6  # same picture; resamplers differ slightly


def test_png_and_grayscale_inputs_become_rgb():
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 30), 200, np.uint8), mode="L").save(buffer, format="PNG")
    pixels = preprocessing.decode_and_resize(tf.constant([buffer.getvalue()]), 32).numpy()
    assert pixels.shape == (1, 32, 32, 3) and pixels.dtype == np.uint8
    assert np.all(pixels == 200)


def _tiff_orientation(value: int, big_endian: bool, as_long: bool = False) -> bytes:
    """An EXIF block (TIFF header, one IFD holding Orientation) in either byte order, as cameras write them; as a
    LONG, as some editors write it."""
    order = ">" if big_endian else "<"
    import struct

    entry = struct.pack(order + "HHII", 0x0112, 4, 1, value) if as_long else \
        struct.pack(order + "HHIHH", 0x0112, 3, 1, value, 0)
    return b"Exif\x00\x00" + (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(order + "IH", 8, 1) + \
        entry + struct.pack(order + "I", 0)


@pytest.mark.parametrize("big_endian, as_long, thumbnail", [(False, False, False), (True, False, False),
                                                              (True, True, True), (False, True, False)],
                         ids=["II", "MM", "MM-long-after-a-thumbnail", "II-long"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_jpegs_exif_orientation_is_applied_as_ingest_applies_it(orientation, big_endian, as_long, thumbnail):
    """The serving signature decodes what a client sends as it is on disk: a phone's photo turned by its EXIF tag
    was classified on its side, while ingest (Pillow's exif_transpose), `predict` and training saw it upright. The
    images in another order too (the tag's byte order, the window searched: an image without the tag is 1)."""
    from PIL import ImageOps

    pixels = np.zeros((60, 120, 3), np.uint8)
    pixels[:, :60], pixels[:, 60:], pixels[:20, :30] = (220, 30, 30), (30, 30, 220), (30, 200, 30)
    plain, tagged = io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels).save(plain, "JPEG", quality=95)
    Image.fromarray(pixels).save(tagged, "JPEG", quality=95,
                                 exif=_tiff_orientation(orientation, big_endian, as_long))
    if thumbnail:  # a JFIF APP0 segment with a thumbnail (a few KB) before the EXIF block, as some editors write
        data = tagged.getvalue()
        app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x20\x20" + bytes(range(256)) * 12
        tagged = io.BytesIO(data[:2] + b"\xff\xe0" + (len(app0) + 2).to_bytes(2, "big") + app0 + data[2:])
    assert Image.open(io.BytesIO(tagged.getvalue())).getexif().get(0x0112) == orientation  # as written
    assert int(preprocessing.exif_orientations(tf.constant([tagged.getvalue()]))[0]) == orientation
    seen_by_ingest = io.BytesIO()
    ImageOps.exif_transpose(Image.open(io.BytesIO(tagged.getvalue()))).save(seen_by_ingest, "PNG")
    ours, upright, unturned = (preprocessing.upright(preprocessing.decode_and_resize(tf.constant([data]), 48),
                                                     preprocessing.exif_orientations(tf.constant([data])))
                               .numpy()[0].astype(int)
                               for data in (tagged.getvalue(), seen_by_ingest.getvalue(), plain.getvalue()))
    assert np.abs(ours - upright).max() <= 12  # the same pixels, but for the two decoders' chroma upsampling
    if orientation != 1:
        assert np.abs(unturned - upright).max() > 100, "a wrong turn would be told apart"


@pytest.mark.parametrize("data", [b"", b"\xff", b"\xff\xd8", b"GIF89a" + bytes(64), bytes(range(256)) * 4,
                                  b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*\x00\x00\xff\xff",
                                  b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00II*\x00\x08\x00\x00\x00\x09\x00\x12\x01"])
def test_an_image_without_a_readable_orientation_is_taken_as_it_is(data):
    """Not a JPEG, no EXIF block, or one cut short or pointing past its end: orientation 1, never an error."""
    assert preprocessing.exif_orientations(tf.constant([data, data])).numpy().tolist() == [1, 1]


def _png(pixels: np.ndarray, mode: str, **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode).save(out, "PNG", **save)
    return out.getvalue()


def test_a_pngs_transparency_is_composited_onto_white_as_ingest_composes_it_and_other_bytes_pass_as_they_came():
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    rgba[:8, :, 3], rgba[8:16, :, 3] = 0, 255  # transparent, opaque, then every alpha between
    palette = Image.fromarray(rgba[..., :3], "RGB").quantize(16)
    sent = [_png(rgba, "RGBA"), _png(rng.integers(0, 256, (24, 32, 2), dtype=np.uint8), "LA")]
    with io.BytesIO() as out:
        palette.save(out, "PNG", transparency=0)  # a palette's entry 0 transparent (tRNS)
        sent.append(out.getvalue())
    keyed = rgba[..., :3].copy()
    keyed[:8] = 0
    sent.append(_png(keyed, "RGB", transparency=(0, 0, 0)))  # a key colour (tRNS) in an RGB image
    sent.append(_png(keyed[..., 0], "L", transparency=0))  # ... and in a grey one
    late = PngImagePlugin.PngInfo()
    for index in range(9):  # 72 KB of text chunks before the tRNS chunk, as a large profile or XMP packet puts it
        late.add_text(f"note{index}", "x" * 8000)
    sent.append(_png(keyed, "RGB", transparency=(0, 0, 0), pnginfo=late))
    for data in sent:
        ours = tf.io.decode_png(preprocessing.on_white(tf.constant(data)), channels=3).numpy().astype(int)
        opened = Image.open(io.BytesIO(data)).convert("RGBA")  # ingest's composite (ingest/images.py)
        as_ingest = Image.new("RGB", opened.size, (255, 255, 255))
        as_ingest.paste(opened, mask=opened.getchannel("A"))
        assert np.abs(ours - np.asarray(as_ingest).astype(int)).max() <= 1, "the same composite as ingest's"
        assert np.asarray(opened)[..., 3].min() == 0, "the image has transparent pixels to composite"
    assert (tf.io.decode_png(preprocessing.on_white(tf.constant(sent[0])), channels=3).numpy()[:8] == 255).all()
    opaque = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    for data in (_png(opaque, "RGB"), _png(opaque[..., 0], "L"), _png(opaque, "RGB", interlace=1)):
        assert preprocessing.on_white(tf.constant(data)).numpy() == data, "no transparency: passed as it came"
    jpeg = io.BytesIO()
    Image.fromarray(opaque).save(jpeg, "JPEG")
    assert preprocessing.on_white(tf.constant(jpeg.getvalue())).numpy() == jpeg.getvalue()
    assert preprocessing.on_white(tf.constant(b"")).numpy() == b""
