"""Grad-CAM: where in the image the classifier looked for its answer.

The gradient of the predicted class's score with respect to MobileNetV2's last
convolutional block weights each of that block's channels; their weighted,
rectified sum, upsampled to the image, is the heat map (1 = most evidence).
"""

from __future__ import annotations

import numpy as np

from trainer import model as model_lib


def gradcam_model(classifier):
    """The classifier rewired to return (last conv block features, logit)."""
    import keras

    inputs = keras.Input(shape=classifier.input_shape[1:])
    features = model_lib.get_base(classifier)(classifier.get_layer(model_lib.RESCALE_NAME)(inputs), training=False)
    return keras.Model(inputs, [features, model_lib.through_head(classifier, features)])


def gradcam(classifier, pixels: np.ndarray) -> np.ndarray:
    """Heat maps in [0, 1] of shape [N, H, W] for float pixels [N, H, W, 3] in [0, 255]."""
    import tensorflow as tf

    rewired = gradcam_model(classifier)
    pixels = tf.convert_to_tensor(pixels, tf.float32)
    with tf.GradientTape() as tape:
        features, logits = rewired(pixels, training=False)
        # Evidence for the predicted class: the logit for "dog", its negative for "cat".
        score = tf.where(logits >= 0, logits, -logits)
    gradients = tape.gradient(score, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, pixels.shape[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return (cam / tf.where(peak > 0, peak, tf.ones_like(peak))).numpy()
