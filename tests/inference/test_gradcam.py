import numpy as np
import tensorflow as tf

from config import TrainingConfig
from inference import contact_sheet
from inference.gradcam import gradcam
from inference.predict import Prediction
from trainer import model as model_lib
from trainer import preprocessing

SIZE = 96


def test_gradcam_map_has_the_image_shape_and_is_not_constant(demo_jpegs):
    model = model_lib.build_model(TrainingConfig(weights="none", alpha=0.35, seed=2), SIZE)
    jpegs = demo_jpegs["cat"] + demo_jpegs["dog"]
    pixels = tf.cast(preprocessing.decode_and_resize(tf.constant(jpegs), SIZE), tf.float32).numpy()
    model_lib.calibrate_batchnorm(model, pixels)
    heat = gradcam(model_lib.get_classifier(model), pixels)
    assert heat.shape == (len(jpegs), SIZE, SIZE)
    assert heat.min() >= 0 and heat.max() <= 1
    for one in heat:
        assert one.max() == 1.0 and one.std() > 0.01, "a heat map must single out regions"


def test_contact_sheet_shows_every_file_readable_or_not(demo_jpegs):
    predictions = [Prediction("a/cat.jpg", "cat", 0.1), Prediction("b/broken.jpg", None, None, "empty file"),
                   Prediction("c/dog.jpg", "dog", 0.9)]
    images = {0: demo_jpegs["cat"][0], 2: demo_jpegs["dog"][0]}
    heat = {0: np.linspace(0, 1, 64 * 64).reshape(64, 64)}
    sheet = contact_sheet.render(predictions, images, heat, tile=100, columns=2)
    caption = 2 * 16 + 4  # the longest caption: two lines (class or reason, file name), none wrapped
    assert sheet.size == (2 * 106 + 6, 2 * (100 + caption + 6) + 6)
    unreadable_tile = np.asarray(sheet.crop((112 + 10, 6 + 10, 112 + 40, 6 + 40)))
    assert (unreadable_tile == 210).all(), "the unreadable file keeps its place, in grey"
