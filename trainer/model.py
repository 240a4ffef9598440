"""MobileNetV2 transfer-learning model: build, freeze, unfreeze, compile.

The classifier takes float pixels in [0, 255] of shape [size, size, 3] and
returns one logit (dog vs. cat); MobileNetV2's rescaling to [-1, 1] is its
first layer, so whoever feeds it pixels needs no other code. The training
model puts augmentation in front of it.
"""

from __future__ import annotations

import hashlib
import os

import keras
import numpy as np
import tensorflow as tf

from config import MOBILENET_V2_BLOCKS, WEIGHTS_IMAGENET, WEIGHTS_NONE, TrainingConfig
from contract.errors import RunFailedError, first_line
from trainer import short_base, weights_files

BASE_NAME = "mobilenetv2_base"
LOGITS_NAME = "logits"
CLASSIFIER_NAME = "classifier"
RESCALE_NAME = "to_mobilenet_range"
# The training model's augmentation layers are named with this prefix (trainer.feature_cache finds them by it).
AUGMENT_PREFIX = "augment_"


class WeightsUnavailableError(RunFailedError, RuntimeError):
    """ImageNet weights could not be fetched, or a weights file is unusable."""


def _base_weights_argument(weights: str) -> str | None:
    if weights == WEIGHTS_NONE:
        return None
    if weights == WEIGHTS_IMAGENET:
        return WEIGHTS_IMAGENET
    if not os.path.isfile(weights):
        raise WeightsUnavailableError(f"weights file {weights!r} does not exist")
    return weights


def build_base(config: TrainingConfig, image_size: int) -> keras.Model:
    """MobileNetV2 without its top, with the configured weights, kept to the configured blocks."""
    if keras.backend.image_data_format() != "channels_last":  # a user's ~/.keras/keras.json may say otherwise
        raise RunFailedError(f"Keras' image data format is {keras.backend.image_data_format()} (keras.json or "
                             "keras.backend.set_image_data_format): the model is built for channels_last")
    weights = _base_weights_argument(config.weights)
    try:  # a shorter base's file loads by name after the cut; any other weights into the whole base before it
        by_name = weights not in (None, WEIGHTS_IMAGENET) and weights_files.shorter_base_file(weights,
                                                                                                 config.base_blocks)
    except weights_files.WeightsFileError as error:
        raise WeightsUnavailableError(str(error)) from error
    if config.base_blocks < MOBILENET_V2_BLOCKS and (weights is None or by_name):  # no whole base to load first
        base = short_base.build(image_size, config.alpha, config.base_blocks, BASE_NAME)
        return _load_by_name(base, weights) if by_name else base
    try:
        base = keras.applications.MobileNetV2(input_shape=(image_size, image_size, 3), alpha=config.alpha,
                                              include_top=False, weights=None if by_name else weights)
    except Exception as error:  # Keras raises several types for a failed download or a bad file.
        if weights == WEIGHTS_IMAGENET:
            raise WeightsUnavailableError(
                "could not load MobileNetV2 ImageNet weights "
                f"(alpha={config.alpha}, image size {image_size}): {first_line(error)}. Without network access, "
                "download the .h5 file elsewhere and pass its path as --weights, or use --weights none."
            ) from error
        raise WeightsUnavailableError(f"could not load weights file {weights!r}: {first_line(error)}") from error
    if config.base_blocks < MOBILENET_V2_BLOCKS:
        prefix = f"block_{config.base_blocks}_" if config.base_blocks else "expanded_conv_"
        last = [layer for layer in base.layers if layer.name.startswith(prefix)][-1]
        base = keras.Model(base.input, last.output)
    base.name = BASE_NAME
    return _load_by_name(base, weights) if by_name else base


def _load_by_name(base: keras.Model, weights: str) -> keras.Model:
    try:
        base.load_weights(weights, by_name=True)
    except Exception as error:  # Keras raises several types for a mismatched or damaged file.
        raise WeightsUnavailableError(f"could not load weights file {weights!r}: {first_line(error)}") from error
    return base


def build_model(config: TrainingConfig, image_size: int) -> keras.Model:
    """Training model: augmentation -> classifier (see build_classifier).

    Augmentation layers are active only in training; the classifier alone is
    what gets exported, so serving carries no random ops.
    """
    keras.utils.set_random_seed(config.seed)
    classifier = build_classifier(config, image_size)
    inputs = keras.Input(shape=(image_size, image_size, 3), name="pixels")
    x = inputs
    if config.flip:
        x = keras.layers.RandomFlip("horizontal", seed=config.seed, name=AUGMENT_PREFIX + "flip")(x)
    if config.rotation > 0:
        x = keras.layers.RandomRotation(config.rotation, seed=config.seed, name=AUGMENT_PREFIX + "rotation")(x)
    if config.zoom > 0:
        x = keras.layers.RandomZoom(config.zoom, seed=config.seed, name=AUGMENT_PREFIX + "zoom")(x)
    return keras.Model(inputs, classifier(x), name="training_model")


def build_classifier(config: TrainingConfig, image_size: int) -> keras.Model:
    """Rescaling -> frozen MobileNetV2 -> GAP -> [Dense] -> Dropout -> Dense(1) logit.

    The base is called with training=False so its BatchNorm layers stay in
    inference mode in both phases, as the base was trained with other data.
    """
    base = build_base(config, image_size)
    base.trainable = False
    inputs = keras.Input(shape=(image_size, image_size, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=RESCALE_NAME)(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if config.hidden_units:
        x = keras.layers.Dense(config.hidden_units, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(1, name=LOGITS_NAME)(x)
    return keras.Model(inputs, outputs, name=CLASSIFIER_NAME)


def get_classifier(model: keras.Model) -> keras.Model:
    """The exported part of a training model (a classifier is returned as is)."""
    return model if model.name == CLASSIFIER_NAME else model.get_layer(CLASSIFIER_NAME)


def get_base(model: keras.Model) -> keras.Model:
    return get_classifier(model).get_layer(BASE_NAME)


def head_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The head: the classifier's layers after the base, in order, the first of them pooling the base's feature
    map into a vector. Read from the model, so a new head (build_classifier) needs no change where the head is
    rebuilt on other inputs (the feature cache, Grad-CAM)."""
    layers = get_classifier(model).layers
    head = layers[[layer.name for layer in layers].index(BASE_NAME) + 1:]
    if not head or len(head[0].output.shape) != 2:
        raise ValueError(f"the classifier's head must start by pooling the base's features into a vector; its "
                         f"layers after the base are {[layer.name for layer in head]}")
    return head


def through_head(model: keras.Model, features):
    """The base's features through the head, in inference mode."""
    for layer in head_layers(model):
        features = layer(features, training=False)
    return features


def describe(classifier: keras.Model) -> dict:
    """The layer stack from input to logit as plain data (kept in the training record): what the run report draws
    without loading the model."""
    base = classifier.get_layer(BASE_NAME)
    return {"input_shape": list(classifier.input_shape[1:]),
            "base": {"name": BASE_NAME, "layers": len(base.layers), "weights": int(base.count_params())},
            "layers": [{"name": layer.name, "type": type(layer).__name__,
                        "output_shape": list(layer.output.shape[1:]), "weights": int(layer.count_params())}
                       for layer in classifier.layers[1:]]}


# The most activation bytes a pass through the base (the BatchNorm calibration, the TFLite check's logits) holds
# eagerly, a bound on its memory. From 48 to 757 MiB the eager calibration took 0.27-0.71 s of CPU where tracing it
# took 1.16-1.76 s; at 3.4 GiB eagerly 8.7 s against 2.7 s traced (docs/performance.md, Training).
EAGER_PASS_BYTES = 256 * 2**20


def eager_pass_fits(base: keras.Model, images: int) -> bool:
    """Whether every layer's float32 output for `images` images, what an eager pass through `base` holds, comes to at
    most EAGER_PASS_BYTES. A base of unknown size (an input without height or width) is taken as too large."""
    shapes = [layer.output.shape[1:] for layer in base.layers]
    if any(dimension is None for shape in shapes for dimension in shape):
        return False
    return 4 * images * sum(int(np.prod(shape)) for shape in shapes) <= EAGER_PASS_BYTES


def calibrate_batchnorm(model: keras.Model, pixels: np.ndarray, kept: Calibrations | None = None) -> None:
    """Sets the base's BatchNorm statistics from a batch of training pixels.

    Only for random weights: a pretrained base carries meaningful statistics,
    but a random one has mean 0 / variance 1 everywhere, its activations fade
    through the depth and the frozen base outputs a near-constant. Running
    the base once in training mode with momentum 0 stores each layer's batch
    statistics as its moving statistics (a data-dependent initialization).
    Run eagerly, the pass holds every layer's activations at once
    (docs/performance.md, Training), so a large one runs as one tf.function;
    tracing the base costs about a second, so a small one runs eagerly.

    `kept` (a search's, trainer.tuning): a base with the same weights and settings calibrated on the same pixels as
    an earlier one gets the statistics that one computed instead of a pass of its own. A search's trials build the
    same random base from the same seed and calibrate it on the same sample: at the default 256 images of 160 px a
    whole base pass each (docs/performance.md, Tuning).
    """
    base = get_base(model)
    rescale = get_classifier(model).get_layer(RESCALE_NAME)
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    key = _calibration_key(rescale, base, norms, pixels) if kept is not None else None
    if key is not None and key in kept:
        for layer, statistics in zip(norms, kept[key], strict=True):
            for variable, value in zip((layer.moving_mean, layer.moving_variance), statistics):
                variable.assign(value)
        kept.reused += 1
        return
    run = lambda x: base(rescale(x), training=True)  # noqa: E731
    if not eager_pass_fits(base, len(pixels)):
        run = tf.function(run)
    was_trainable = base.trainable
    momenta = [layer.momentum for layer in norms]
    # Keras runs a non-trainable BatchNorm in inference mode whatever `training` says.
    base.trainable = True
    try:
        for layer in norms:
            layer.momentum = 0.0
        run(tf.constant(pixels, tf.float32))
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
        base.trainable = was_trainable
    if key is not None:
        kept[key] = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in norms]


class Calibrations(dict):
    """{a digest of what a calibration depends on (_calibration_key): each BatchNorm layer's (moving mean, moving
    variance) after it}, and how many calibrations were taken from it rather than run."""

    reused = 0


def _calibration_key(rescale: keras.layers.Layer, base: keras.Model, norms: list, pixels: np.ndarray) -> str:
    """What the pass's statistics depend on: the pixels, the rescaling before the base, the compute dtype, each
    BatchNorm's settings and the base's weights."""
    pixels = np.ascontiguousarray(pixels)
    settings = [pixels.shape, pixels.dtype.str, keras.config.dtype_policy().name, rescale.scale, rescale.offset,
                base.input.shape, [(layer.epsilon, layer.axis, layer.center, layer.scale, layer.dtype_policy.name)
                                   for layer in norms]]
    digest = hashlib.blake2b(repr(settings).encode())
    for variable in base.weights:
        value = np.ascontiguousarray(variable.numpy())
        digest.update(f"{value.shape} {value.dtype.str}".encode())
        digest.update(value)
    digest.update(pixels)  # (no copy: the array's own buffer)
    return digest.hexdigest()


def inference_logits(classifier: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """The classifier's logits for `pixels` in inference mode. A small pass runs eagerly (tracing Keras' predict
    step took 1.3 s for a handful of images), a larger one through `predict`, batch by batch: eagerly, every
    layer's output is held at once (EAGER_PASS_BYTES)."""
    if not eager_pass_fits(get_base(classifier), len(pixels)):
        return classifier.predict(pixels, verbose=0)
    return classifier(tf.constant(pixels, tf.float32), training=False).numpy()


def compile_model(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
                 keras.metrics.AUC(name="auc", from_logits=True)],
    )
    # Built now, not in fit: Keras builds an optimizer outside a distribution strategy while it traces the first
    # step, and a tf.function that creates variables is traced twice, seconds of every phase of every run.
    model.optimizer.build(model.trainable_variables)


def unfreeze_for_fine_tuning(model: keras.Model, fine_tune_from: int) -> None:
    """Phase 2: base layers from index `fine_tune_from` on become trainable.

    BatchNorm layers stay frozen (and, called with training=False, in
    inference mode) so a small fine-tuning set cannot wreck their statistics.
    Recompile afterwards for the change to take effect.
    """
    base = get_base(model)
    if fine_tune_from > len(base.layers):
        raise ValueError(f"fine_tune_from={fine_tune_from} is past the base's {len(base.layers)} layers")
    base.trainable = True
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= fine_tune_from and not isinstance(layer, keras.layers.BatchNormalization)


BASE_WEIGHTS_MARK = "cats_vs_dogs_base_weights"


def written_by_base_weights(path: str) -> bool:
    """Whether `path` is a weights file save_base_weights wrote (its mark among the HDF5 file's attributes)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs.get(BASE_WEIGHTS_MARK, 0)) == 1
    except (OSError, ValueError, TypeError):  # not an HDF5 file, or one h5py cannot read
        return False


def save_base_weights(model: keras.Model, path: str) -> None:
    """Writes the base's weights as a no-top weights file in the layout of Keras' own ImageNet files
    (HDF5: the layer names as an attribute of the root, one group per layer holding its weights under
    `<layer>/<weight>:0`, in Keras' legacy order), which `--weights FILE` loads as it would those.

    A model trained here on one set of images so becomes the pretrained start for another."""
    import h5py

    base = get_base(model)
    with h5py.File(path, "w") as f:
        f.attrs[BASE_WEIGHTS_MARK] = 1  # a file base-weights may replace; Keras' loader reads only its own names
        f.attrs["layer_names"] = [layer.name.encode("utf8") for layer in base.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = keras.__version__.encode("utf8")
        for layer in base.layers:
            group = f.create_group(layer.name)
            # Keras' legacy order lists a layer's trainable weights first; MobileNetV2's layers (convolutions, then
            # BatchNorm's gamma, beta, moving mean and variance) already list them so, whether frozen or not.
            variables = layer.weights
            names = [f"{layer.name}/{variable.name}:0" for variable in variables]
            group.attrs["weight_names"] = [name.encode("utf8") for name in names]
            for name, variable in zip(names, variables):
                group.create_dataset(name, data=keras.ops.convert_to_numpy(variable))
