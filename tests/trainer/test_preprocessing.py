import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

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
