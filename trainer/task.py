"""Trainer entry point: `run_fn`, referenced by module path `trainer.task.run_fn`.

Phase 1 trains the head on the frozen base. Phase 2 unfreezes the top of the
base and continues at a lower learning rate. The weights with the lowest eval
loss over both phases are the ones exported, so fine-tuning can never make
the exported model worse than phase 1 left it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from typing import Any, Mapping

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from config import TrainingConfig
from contract import features, layout
from trainer import export
from trainer import model as model_lib

_MONITOR = "val_loss"
# Eval images on which the exported TFLite models are compared with the classifier: a cap, as each image
# costs one interpreter run per TFLite model.
TFLITE_CHECK_IMAGES = 500
# Distinct eval images in TF Serving's warm-up requests.
WARMUP_IMAGES = 32


def _list_files(patterns: list[str]) -> list[str]:
    files = sorted({f for pattern in patterns for f in tf.io.gfile.glob(pattern)})
    if not files:
        raise FileNotFoundError(f"no transformed examples match {patterns}")
    return files


RAW_SPEC = {features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
            features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64)}


def encoded_images(file_patterns: list[str], count: int) -> list[bytes]:
    """The image bytes of the first `count` ingested examples."""
    files = _list_files(file_patterns)
    records = tf.data.TFRecordDataset(files, compression_type="GZIP" if files[0].endswith(".gz") else "")
    parsed = records.take(count).map(lambda record: tf.io.parse_single_example(
        record, {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})[features.IMAGE_KEY])
    return list(parsed.as_numpy_iterator())


def pixels_and_labels(file_patterns: list[str], transform) -> tf.data.Dataset:
    """Unbatched (uint8 pixels, float label) pairs from ingested examples, compact enough to cache.

    `transform` maps a batch of raw features ({image, label}) to Transform's
    outputs: the Transform graph itself (the TFT layer). Transform does not
    materialize its output: decoding here, once, into the cache costs less than
    writing and reading back every pixel (README, Performance).
    """
    files = _list_files(file_patterns)
    compression = "GZIP" if files[0].endswith(".gz") else ""

    def decode(serialized):
        raw = tf.io.parse_example(serialized, RAW_SPEC)
        pixels = tf.cast(transform(raw)[features.PIXELS_KEY], tf.uint8)
        label = tf.cast(tf.reshape(raw[features.LABEL_KEY], [-1, 1]), tf.float32)
        return pixels, label

    return (tf.data.TFRecordDataset(files, compression_type=compression)
            .batch(64).map(decode, num_parallel_calls=tf.data.AUTOTUNE).unbatch())


def _to_float(pixels, label):
    return tf.cast(pixels, tf.float32), label


def training_batches(examples: tf.data.Dataset, config: TrainingConfig) -> tf.data.Dataset:
    return (examples.cache()
            .shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
            .batch(config.batch_size).map(_to_float).prefetch(tf.data.AUTOTUNE))


def eval_batches(examples: tf.data.Dataset, config: TrainingConfig) -> tf.data.Dataset:
    return examples.cache().batch(config.batch_size).map(_to_float).prefetch(tf.data.AUTOTUNE)


class _BestWeights(keras.callbacks.Callback):
    """Remembers the weights of the epoch with the lowest eval loss, across fits."""

    def __init__(self):
        super().__init__()
        self.best_value = np.inf
        self.best_epoch = None
        self._weights: dict[str, np.ndarray] | None = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(_MONITOR)
        if value is not None and value < self.best_value:
            self.best_value, self.best_epoch = float(value), epoch
            # Keyed by variable path: phase 2 changes which weights are trainable,
            # and with it the order of model.weights.
            self._weights = {v.path: v.numpy() for v in self.model.weights}

    def restore(self, model: keras.Model) -> None:
        if self._weights is None:
            return
        for variable in model.weights:
            variable.assign(self._weights[variable.path])


def _fit_phase(model, train, evaluation, *, phase, first_epoch, epochs, config, callbacks, history):
    stop = [keras.callbacks.EarlyStopping(monitor=_MONITOR, patience=config.early_stopping_patience)] \
        if config.early_stopping_patience else []
    result = model.fit(train, validation_data=evaluation, initial_epoch=first_epoch,
                       epochs=first_epoch + epochs, callbacks=callbacks + stop, verbose=2)
    learning_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    for offset, epoch in enumerate(result.epoch):
        record = {"phase": phase, "epoch": int(epoch), "learning_rate": learning_rate}
        record.update({key: float(values[offset]) for key, values in result.history.items()})
        history.append(record)
    return first_epoch + len(result.epoch)


def warm_start_from(classifier: keras.Model, base_model_dir: str) -> str | None:
    """Copies the weights of a previous model into `classifier`.

    Returns None on success, or why it could not (missing file, another
    architecture): the caller then trains from its configured start.
    """
    path = os.path.join(base_model_dir, layout.KERAS_MODEL_FILE)
    if not tf.io.gfile.exists(path):
        return f"{path} does not exist"
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, "model.keras")
        tf.io.gfile.copy(path, local)
        previous = keras.models.load_model(local, compile=False)
    old = {v.path: v for v in previous.weights}
    new = {v.path: v for v in classifier.weights}
    if old.keys() != new.keys() or any(tuple(old[k].shape) != tuple(new[k].shape) for k in new):
        return "the previous model has another architecture (alpha, image size or head differ)"
    for key, variable in new.items():
        variable.assign(old[key])
    return None


def train(config: TrainingConfig, image_size: int, train: tf.data.Dataset, evaluation: tf.data.Dataset,
          calibration_pixels: np.ndarray | None, log_dir: str | None = None,
          base_model_dir: str | None = None) -> tuple[keras.Model, dict]:
    """Runs both phases and returns the best model and its history record."""
    model = model_lib.build_model(config, image_size)
    warm_started = False
    if config.warm_start and base_model_dir:
        problem = warm_start_from(model_lib.get_classifier(model), base_model_dir)
        if problem:
            logging.warning("Not warm-starting from %s: %s", base_model_dir, problem)
        warm_started = problem is None
    if config.random_init and calibration_pixels is not None and not warm_started:
        model_lib.calibrate_batchnorm(model, calibration_pixels)
    best = _BestWeights()
    callbacks: list[keras.callbacks.Callback] = [best]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir))
    epochs: list[dict] = []
    next_epoch = 0
    if config.head_epochs:
        model_lib.compile_model(model, config.learning_rate)
        next_epoch = _fit_phase(model, train, evaluation, phase="head", first_epoch=0, epochs=config.head_epochs,
                                config=config, callbacks=callbacks, history=epochs)
    fine_tune_start = next_epoch
    if config.fine_tune_epochs:
        model_lib.unfreeze_for_fine_tuning(model, config.fine_tune_from)
        model_lib.compile_model(model, config.fine_tune_learning_rate)
        _fit_phase(model, train, evaluation, phase="fine_tune", first_epoch=fine_tune_start,
                   epochs=config.fine_tune_epochs, config=config, callbacks=callbacks, history=epochs)
    best.restore(model)
    history = {
        "epochs": epochs,
        "fine_tune_start_epoch": fine_tune_start if config.fine_tune_epochs else None,
        "best_epoch": best.best_epoch,
        "best_val_loss": None if best.best_epoch is None else best.best_value,
        "monitor": _MONITOR,
        "warm_started_from": base_model_dir if warm_started else None,
    }
    return model, history


def sample_pixels(examples: tf.data.Dataset, count: int, config: TrainingConfig) -> np.ndarray:
    """`count` training images drawn through the shuffle buffer: a span's files
    may hold one class after the other, and a plain prefix would then be one class."""
    batch = next(iter(examples.shuffle(config.shuffle_buffer, seed=config.seed).batch(count).take(1)))
    return batch[0].numpy().astype("float32")


def _calibration_pixels(examples: tf.data.Dataset, config: TrainingConfig) -> np.ndarray | None:
    if not config.random_init or not config.calibration_images:
        return None
    return sample_pixels(examples, config.calibration_images, config)


def training_config_from(custom_config: Mapping[str, Any]) -> tuple[TrainingConfig, int]:
    return TrainingConfig(**custom_config["training"]), int(custom_config["image_size"])


def run_fn(fn_args) -> None:
    """TFX Trainer entry point."""
    # Keras cannot know a TFRecord dataset's length and warns each epoch that it "ran out of data".
    warnings.filterwarnings("ignore", message=".*ran out of data.*")
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    config, image_size = training_config_from(fn_args.custom_config)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    tft_layer = tf_transform_output.transform_features_layer()
    train_examples = pixels_and_labels(fn_args.train_files, tft_layer)
    eval_examples = pixels_and_labels(fn_args.eval_files, tft_layer)
    model, history = train(
        config, image_size,
        training_batches(train_examples, config), eval_batches(eval_examples, config),
        _calibration_pixels(train_examples, config), log_dir=fn_args.model_run_dir,
        base_model_dir=fn_args.base_model)
    logging.info("Best epoch %s with %s=%s", history["best_epoch"], _MONITOR, history["best_val_loss"])
    classifier = model_lib.get_classifier(model)
    export.export_serving_model(classifier, tf_transform_output, fn_args.serving_model_dir)
    export.write_warmup_requests(fn_args.serving_model_dir, encoded_images(fn_args.eval_files, WARMUP_IMAGES))
    if config.tflite:
        representative = sample_pixels(train_examples, max(1, config.tflite_calibration_images), config)
        check = [pixels for pixels, _ in eval_examples.take(TFLITE_CHECK_IMAGES).as_numpy_iterator()]
        fidelity = export.export_tflite(classifier, representative, fn_args.serving_model_dir,
                                        np.stack(check).astype("float32") if check else None)
        if fidelity:
            logging.info("TFLite against the classifier on %d eval images: %s", fidelity["images"],
                         export.tflite_agreement(fidelity))
    history_path = os.path.join(fn_args.serving_model_dir, layout.TRAINING_HISTORY_FILE)
    with tf.io.gfile.GFile(history_path, "w") as f:
        json.dump(history, f, indent=2)
