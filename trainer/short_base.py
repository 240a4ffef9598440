"""MobileNetV2 up to one of its blocks, built without the blocks after it.

`--base-blocks N` keeps Keras' MobileNetV2 up to block_N. Building the whole network and cutting it creates the
variables of every block cut away too, each with eager ops of its own: most of the time it takes to build a short
base (four fifths at `--base-blocks 2`). This builds the kept layers as `keras.applications.MobileNetV2` builds them:
the same classes, names, settings and order, so a model of it is the same model, and weights files load into it by
name as into the cut one.

The layers after the cut are made but never called, so none of their variables exist: Keras draws a layer's
initializer seeds from Python's random state as the layer is made, and making them all, in Keras' order, leaves that
state where the whole network would. So what is built after the base (the head) starts from the same random weights
either way. tests/trainer/test_short_base.py compares both ways, layer by layer and weight by weight.
"""

from __future__ import annotations

import keras

from config import MOBILENET_V2_BLOCKS
from config.mobilenet_v2 import BLOCKS, block_channels, divisible, has_add

_BN = {"epsilon": 1e-3, "momentum": 0.999}


def _block_layers(block_id: int, side: int, alpha: float) -> tuple[list, int]:
    """The layers of one inverted residual block in Keras' order and names (its Add, if any, last), and the side of
    its output. Its channels, and whether it has an Add, as config.mobilenet_v2 counts them."""
    _, stride, expansion = BLOCKS[block_id]
    channels, out = block_channels(alpha)[block_id]
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    made = []
    if block_id:
        made += [keras.layers.Conv2D(expansion * channels, kernel_size=1, padding="same", use_bias=False,
                                     activation=None, name=f"{prefix}expand"),
                 keras.layers.BatchNormalization(axis=-1, name=f"{prefix}expand_BN", **_BN),
                 keras.layers.ReLU(6.0, name=f"{prefix}expand_relu")]
    if stride == 2:
        first = side % 2  # Keras' correct_pad for a 3x3 kernel: no row or column before on an even side
        made.append(keras.layers.ZeroPadding2D(padding=((first, 1), (first, 1)), name=f"{prefix}pad"))
    made += [keras.layers.DepthwiseConv2D(kernel_size=3, strides=stride, activation=None, use_bias=False,
                                          padding="same" if stride == 1 else "valid", name=f"{prefix}depthwise"),
             keras.layers.BatchNormalization(axis=-1, name=f"{prefix}depthwise_BN", **_BN),
             keras.layers.ReLU(6.0, name=f"{prefix}depthwise_relu"),
             keras.layers.Conv2D(out, kernel_size=1, padding="same", use_bias=False, activation=None,
                                 name=f"{prefix}project"),
             keras.layers.BatchNormalization(axis=-1, name=f"{prefix}project_BN", **_BN)]
    if has_add(block_id, alpha):
        made.append(keras.layers.Add(name=f"{prefix}add"))
    return made, -(-side // stride)


def _connect(layers: list, x):
    residual = x
    for layer in layers:
        x = layer([residual, x]) if isinstance(layer, keras.layers.Add) else layer(x)
    return x


def build(image_size: int, alpha: float, blocks: int, name: str) -> keras.Model:
    """Keras' MobileNetV2 without its top and random weights (`weights=None`), kept to block `blocks` (0:
    expanded_conv), named `name`."""
    if not 0 <= blocks < MOBILENET_V2_BLOCKS:
        raise ValueError(f"blocks must be in [0, {MOBILENET_V2_BLOCKS}), got {blocks!r}: the whole base is Keras' own")
    inputs = keras.layers.Input(shape=(image_size, image_size, 3))
    first_block_input, _ = block_channels(alpha)[0]
    x = _connect([keras.layers.Conv2D(first_block_input, kernel_size=3, strides=(2, 2), padding="same", use_bias=False,
                                      name="Conv1"),
                  keras.layers.BatchNormalization(axis=-1, name="bn_Conv1", **_BN),
                  keras.layers.ReLU(6.0, name="Conv1_relu")], inputs)
    side = -(-image_size // 2)
    for block_id in range(len(BLOCKS)):
        layers, side = _block_layers(block_id, side, alpha)
        if block_id <= blocks:
            x = _connect(layers, x)
    # The top Keras adds after block_16, made for its seed draws as the blocks above are.
    keras.layers.Conv2D(divisible(1280 * alpha) if alpha > 1.0 else 1280, kernel_size=1, use_bias=False,
                        name="Conv_1")
    return keras.Model(inputs, x, name=name)
