import tensorflow as tf

from config import TrainingConfig
from inference.gradcam import gradcam
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
