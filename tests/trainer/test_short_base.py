"""A base kept to N blocks, built without the blocks after it, is the model Keras' whole MobileNetV2 cut after block N
is: the same layers, settings and starting weights, and the same random state left for what is built after it."""

import random

import keras
import numpy as np
import pytest

from config import MOBILENET_V2_BLOCKS, TrainingConfig
from contract.errors import RunFailedError
from trainer import model as model_lib
from trainer import short_base


def _cut_from_keras(image_size, alpha, blocks):
    whole = keras.applications.MobileNetV2(input_shape=(image_size, image_size, 3), alpha=alpha, include_top=False,
                                           weights=None)
    prefix = f"block_{blocks}_" if blocks else "expanded_conv_"
    return keras.Model(whole.input, [layer for layer in whole.layers if layer.name.startswith(prefix)][-1].output)


def _built_after_seeding(build, seed=5):
    keras.utils.set_random_seed(seed)
    base = build()
    return base, random.getstate(), keras.layers.Dense(3)  # a head's layer, made after the base


@pytest.mark.parametrize("image_size, alpha, blocks", [
    (64, 0.35, 2),   # the tests' cheap base
    (33, 0.25, 0),   # odd sides (the padding before a stride of 2); expanded_conv's residual add at this width
    (47, 1.0, 6),
    (32, 1.3, 15),   # the deepest cut, a width over 1 (the rounding of the channels)
])
def test_a_short_base_is_keras_mobilenet_v2_cut_after_its_last_block(image_size, alpha, blocks):
    theirs, their_state, their_dense = _built_after_seeding(lambda: _cut_from_keras(image_size, alpha, blocks))
    mine, my_state, my_dense = _built_after_seeding(lambda: short_base.build(image_size, alpha, blocks, "short"))
    assert mine.name == "short" and len(mine.layers) == len(theirs.layers) > 1
    # (an Input layer's name differs from model to model)
    for their_layer, my_layer in zip(theirs.layers[1:], mine.layers[1:]):
        assert (type(my_layer), my_layer.get_config()) == (type(their_layer), their_layer.get_config())
        assert [w.path for w in my_layer.weights] == [w.path for w in their_layer.weights]
        for my_weight, their_weight in zip(my_layer.weights, their_layer.weights):
            np.testing.assert_array_equal(my_weight.numpy(), their_weight.numpy(), err_msg=my_weight.path)
    assert mine.output.shape == theirs.output.shape
    # The layers after the cut drew their seeds: what is made next starts from the same random weights.
    assert my_state == their_state
    their_dense.build((None, 4))
    my_dense.build((None, 4))
    np.testing.assert_array_equal(my_dense.kernel.numpy(), their_dense.kernel.numpy())
    pixels = np.random.default_rng(0).uniform(-1, 1, (2, image_size, image_size, 3)).astype("float32")
    np.testing.assert_array_equal(mine(pixels).numpy(), theirs(pixels).numpy())


def test_the_training_model_with_a_short_base_starts_from_the_weights_it_had_on_a_cut_whole_base(monkeypatch):
    config = TrainingConfig(weights="none", alpha=0.35, base_blocks=2, fine_tune_from=18, seed=3)
    short = model_lib.build_model(config, 64)

    def cut_whole_base(image_size, alpha, blocks, name):
        base = _cut_from_keras(image_size, alpha, blocks)
        base.name = name
        return base

    monkeypatch.setattr(short_base, "build", cut_whole_base)
    cut = model_lib.build_model(config, 64)
    assert [w.path for w in short.weights] == [w.path for w in cut.weights] and len(cut.weights) > 45
    for mine, theirs in zip(short.weights, cut.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)


@pytest.mark.parametrize("blocks", [2, MOBILENET_V2_BLOCKS])
def test_a_channels_first_keras_is_refused_in_one_line_at_any_depth(blocks):
    keras.backend.set_image_data_format("channels_first")
    try:
        with pytest.raises(RunFailedError, match=r"^Keras' image data format is channels_first \(keras\.json or "
                                                 r"keras\.backend\.set_image_data_format\): the model is built for "
                                                 r"channels_last$"):
            model_lib.build_base(TrainingConfig(weights="none", alpha=0.35, base_blocks=blocks, fine_tune_from=1), 64)
    finally:
        keras.backend.set_image_data_format("channels_last")


def test_the_whole_base_is_keras_own():
    with pytest.raises(ValueError, match="the whole base is Keras' own"):
        short_base.build(64, 0.35, MOBILENET_V2_BLOCKS, "whole")
