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


def decode_and_resize(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes a batch of encoded images to uint8 [batch, size, size, 3].

    Accepts JPEG (what ingest writes) and also PNG/GIF/BMP, which serving
    clients may send. Grayscale and RGBA inputs become RGB.
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
