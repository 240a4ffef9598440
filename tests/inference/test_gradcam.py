import tensorflow as tf

from config import TrainingConfig
from inference.gradcam import gradcam, gradcam_model
from tests.helpers import CHEAP_BASE
from trainer import model as model_lib
from trainer import preprocessing

SIZE = 96


def test_gradcam_map_has_the_image_shape_and_is_not_constant(demo_jpegs):
    config = TrainingConfig(weights="none", alpha=0.35, **CHEAP_BASE, seed=2)
    model = model_lib.build_model(config, SIZE)
    jpegs = demo_jpegs["cat"] + demo_jpegs["dog"]
    pixels = tf.cast(preprocessing.decode_and_resize(tf.constant(jpegs), SIZE), tf.float32).numpy()
    model_lib.calibrate_batchnorm(model, pixels)
    heat = gradcam(model_lib.get_classifier(model), pixels)
    assert heat.shape == (len(jpegs), SIZE, SIZE)
    assert heat.min() >= 0 and heat.max() <= 1
    for one in heat:
        assert one.max() == 1.0 and one.std() > 0.01, "a heat map must single out regions"


def test_a_head_of_other_layers_is_rewired_from_the_model_itself(monkeypatch):
    """Grad-CAM and the feature cache rebuild the head from the classifier's layers after the base, not from
    names: a head with other layers (two hidden layers here, none named as the default's) gives them the
    classifier's own logit."""
    import keras
    import numpy as np

    from trainer import feature_cache

    def other_head(config, image_size):
        base = model_lib.build_base(config, image_size)
        inputs = keras.Input(shape=(image_size, image_size, 3))
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=model_lib.RESCALE_NAME)(inputs)
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(base(x, training=False))
        x = keras.layers.Dense(16, activation="relu", name="first")(x)
        x = keras.layers.Dense(8, activation="tanh", name="second")(x)
        return keras.Model(inputs, keras.layers.Dense(1, name=model_lib.LOGITS_NAME)(x),
                           name=model_lib.CLASSIFIER_NAME)

    monkeypatch.setattr(model_lib, "build_classifier", other_head)
    config = TrainingConfig(weights="none", alpha=0.35, **CHEAP_BASE, seed=3)
    model = model_lib.build_model(config, SIZE)
    classifier = model_lib.get_classifier(model)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    expected = classifier(pixels, training=False).numpy()
    _, logits = gradcam_model(classifier)(pixels, training=False)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=1e-5)
    parts = feature_cache.split(model, config)
    activations = parts.below(classifier.get_layer(model_lib.RESCALE_NAME)(pixels), training=False)
    np.testing.assert_allclose(parts.top_model()(activations, training=False).numpy(), expected, rtol=1e-4,
                               atol=1e-5)
