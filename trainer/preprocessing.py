"""Decoding and resizing of JPEG bytes: Transform's preprocessing_fn.

Transform analyzes this graph and saves it without materializing its output;
the Trainer runs it (the TFT layer) while reading the examples, and the serving
model carries it, so training and serving see identical pixels. Its output is
uint8 pixel values, not float32: the model itself rescales (see trainer.model).
"""

from __future__ import annotations

from typing import Any, Mapping

import tensorflow as tf

from contract import features

# A JPEG's EXIF block: an APP1 segment (FF E1, then its length) whose data opens with "Exif\0\0"; None: any byte
_EXIF_APP1 = (0xFF, 0xE1, None, None, *b"Exif\x00\x00")
# Bytes searched for it: the Exif standard puts it right after the JPEG's start, JFIF files after their APP0 segment
# (which may hold a thumbnail), some editors after an ICC profile; a JPEG segment holds at most 64 KiB. Only the
# serving signature reads it (a batch's bytes searched at once: 64 KiB an image for that batch's call).
_EXIF_SEARCHED = 1 << 16
_ORIENTATION_TAG = 0x0112
_IFD_ENTRIES = 64  # entries of the first IFD looked at: cameras write a few dozen, Orientation among the first


def exif_orientations(encoded: tf.Tensor) -> tf.Tensor:
    """The EXIF Orientation (1-8) of each of a batch [N] of encoded images: 1 where it has none, is no JPEG, or
    its EXIF block cannot be read. Read from the first IFD, as Pillow's ImageOps.exif_transpose reads it. The whole
    batch at once, in straight-line ops: ops per image (inside a map) or control flow (a tf.cond, a tf.switch_case)
    cost about a millisecond an image and a second of graph optimization at a trace's first call."""
    data = tf.io.decode_raw(encoded, tf.uint8, fixed_length=_EXIF_SEARCHED)  # [N, searched], zeros past the end
    size = tf.minimum(tf.cast(tf.strings.length(encoded), tf.int64), _EXIF_SEARCHED)[:, None]
    span = _EXIF_SEARCHED - len(_EXIF_APP1) + 1
    found = tf.ones_like(data[:, :span], tf.bool)
    for offset, byte in enumerate(_EXIF_APP1):
        if byte is not None:
            found &= tf.equal(data[:, offset:offset + span], tf.constant(byte, tf.uint8))
    tiff = tf.argmax(tf.cast(found, tf.int32), axis=1)[:, None] + len(_EXIF_APP1)  # II or MM, 42, the IFD's offset

    def at(index):
        return tf.cast(tf.gather(data, tf.clip_by_value(index, 0, _EXIF_SEARCHED - 1), batch_dims=1), tf.int64)

    little = tf.equal(at(tiff), 0x49) & tf.equal(at(tiff + 1), 0x49)
    big = tf.equal(at(tiff), 0x4D) & tf.equal(at(tiff + 1), 0x4D)

    def u16(index):
        return tf.where(little, at(index) + 256 * at(index + 1), 256 * at(index) + at(index + 1))

    def u32(index):
        return tf.where(little, u16(index) + 65536 * u16(index + 2), 65536 * u16(index) + u16(index + 2))

    ifd = tiff + u32(tiff + 4)
    entries = ifd + 2 + 12 * tf.range(_IFD_ENTRIES, dtype=tf.int64)[None, :]  # each: tag, type, count, value
    listed = (tf.range(_IFD_ENTRIES, dtype=tf.int64)[None, :] < u16(ifd)) & (entries + 10 <= size)
    # SHORT as the standard has it; LONG as some writers store it (in big-endian order its value is the low half)
    stored = tf.where(tf.equal(u16(entries + 2), 4), u32(entries + 8), u16(entries + 8))
    value = tf.reduce_max(tf.where(listed & tf.equal(u16(entries), _ORIENTATION_TAG), stored, 0), axis=1)
    jpeg = tf.equal(tf.strings.substr(encoded, 0, 2), b"\xff\xd8")  # a JPEG's start of image
    known = jpeg & tf.reduce_any(found, axis=1) & (little | big)[:, 0] & (ifd + 2 <= size)[:, 0] & \
        (value >= 1) & (value <= 8)
    return tf.where(known, value, 1)


def upright(pixels: tf.Tensor, orientations: tf.Tensor) -> tf.Tensor:
    """A batch of square images [N, size, size, channels], each as its EXIF orientation says it is seen (Pillow's
    exif_transpose, which ingest applies): 2 mirrored, 3 upside down, 4 flipped, 5 transposed, 6 turned left, 7
    transversed, 8 turned right, each undone. Each is a transpose or not (5-8), then a reversal of rows, of
    columns, of both or of neither. Applied once the images are resized to squares: a square keeps its shape
    whichever way it turns, so the batch is turned at once, and resizing first and turning after gives what turning
    first gives (the resize treats each axis alike)."""
    shape = tf.shape(pixels)
    side = shape[1]
    orientations = tf.reshape(tf.cast(orientations, tf.int32), [-1, 1, 1])

    def among(cases):
        return tf.reduce_any(tf.equal(orientations[..., None], cases), axis=-1)

    # Where each pixel of the upright square comes from, as one gather (a tf.where of whole images per case cost
    # five times as much): rows and columns counted from the far side where reversed, swapped where transposed.
    rows, columns = tf.meshgrid(tf.range(side), tf.range(side), indexing="ij")
    rows = tf.where(among([3, 4, 7, 8]), side - 1 - rows, rows)
    columns = tf.where(among([2, 3, 6, 7]), side - 1 - columns, columns)
    turned = among([5, 6, 7, 8])
    source = tf.where(turned, columns * side + rows, rows * side + columns)
    flat = tf.reshape(pixels, [shape[0], side * side, shape[3]])
    return tf.reshape(tf.gather(flat, tf.reshape(source, [shape[0], side * side]), batch_dims=1), shape)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPE_AT = 25  # in IHDR, the chunk every PNG opens with: 4 grey and alpha, 6 colour and alpha


def on_white(encoded: tf.Tensor) -> tf.Tensor:
    """One encoded image (a scalar string) with a PNG's transparency composited onto white, as ingest stored what
    was trained on and `predict` classifies: TensorFlow's decoders drop the alpha channel, leaving what lies under
    a transparent pixel (mostly black) to be classified. A PNG that can be transparent (an alpha channel, or a
    tRNS chunk's key colour or palette entries) comes back re-encoded (losslessly), any other bytes as they came.
    Only the serving signature calls it, per image: such a PNG is decoded once more, in 8 bits a channel, and
    composited in 16-bit integers (a float copy of a 50-megapixel image would take gigabytes)."""
    def can_be_transparent() -> tf.Tensor:
        with_alpha = tf.reduce_any(tf.equal(tf.strings.substr(encoded, _PNG_COLOR_TYPE_AT, 1), [b"\x04", b"\x06"]))
        # anywhere: text and colour-profile chunks of any size may come before it (bytes that merely spell it in
        # the compressed data cost a composite that changes nothing)
        keyed = tf.size(tf.strings.split(encoded, sep="tRNS")) > 1
        return tf.logical_or(with_alpha, keyed)

    def composited() -> tf.Tensor:
        rgba = tf.io.decode_png(encoded, channels=4)
        alpha = tf.cast(rgba[..., 3], tf.uint16)
        white = 255 * (255 - alpha) + 127  # at most 255 * 255 with a channel's share: 16 bits hold it
        channels = [tf.cast((tf.cast(rgba[..., c], tf.uint16) * alpha + white) // 255, tf.uint8) for c in range(3)]
        return tf.io.encode_png(tf.stack(channels, axis=-1))

    def png() -> tf.Tensor:
        return tf.cond(can_be_transparent(), composited, lambda: encoded)

    return tf.cond(tf.equal(tf.strings.substr(encoded, 0, 8), _PNG_SIGNATURE), png, lambda: encoded)


def decode_and_resize(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes a batch of encoded images to uint8 [batch, size, size, 3].

    Accepts JPEG (what ingest writes) and also PNG/GIF/BMP, which serving
    clients may send. Grayscale and RGBA inputs become RGB. A JPEG's EXIF
    orientation is not applied here (ingest applied it to what is trained
    on; the serving signature applies it: `upright`).
    """
    def decode_one(encoded: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    image_bytes = tf.reshape(image_bytes, [-1])
    return tf.map_fn(decode_one, image_bytes,
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8))


def preprocessing_fn(inputs: Mapping[str, Any], custom_config: Mapping[str, Any]) -> dict[str, tf.Tensor]:
    """TFT preprocessing: raw JPEG bytes -> fixed-size pixels; label passes through."""
    image_size = int(custom_config["image_size"])
    pixels = decode_and_resize(inputs[features.IMAGE_KEY], image_size)
    outputs = {features.PIXELS_KEY: tf.cast(pixels, tf.int64)}
    if features.LABEL_KEY in inputs:
        outputs[features.LABEL_KEY] = inputs[features.LABEL_KEY]
    return outputs
